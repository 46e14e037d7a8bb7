"""Non-pad tokens per second of the training data path: ours (streamed, grouped by length inside a window)
against ChatLM-mini-Chinese's (random order, prompt and response padded to the longest in the batch), on the same
model, the same rows and the same batch size, in one run.

The rows: `--rows` drawn at random across the whole of `sft/sft_mix_44k` (its rows are sorted by source, so the
first rows would be one source only), written as parquet with row groups of 100 rows (many shards, as the README
advises for streams), and `--eval-rows` more, held out. Both paths train on exactly these rows, once (one window
holds them all), so both see the same real tokens; the batches differ only in order and grouping. Both feed the
same training step (the model's forward and backward, AdamW). Reported: the share of computed positions that are
real tokens, non-pad tokens per second of training, the ratio, and each trained model's loss on the held-out rows
(per real token, [EOS] included), so that speed is not bought with a worse model.

    python benchmarks/bench_data_path.py [--rows 800] [--eval-rows 300] [--batch-size 16] [--preset small]

Prints JSON, then a markdown row.
"""

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCCL_SHARED_DATA", ROOT.parent / "shared" / "data"))


def tokenizer_for(data: Path, work: Path):
    from sccl_hf.model import load_tokenizer
    from sccl_hf.stages.tokenizer import TokenizerArguments, main

    folder = work / "tokenizer"
    if not (folder / "tokenizer.json").is_file():
        main(TokenizerArguments(files=[str(data)], vocab_size=8000, output_dir=str(folder)))
    return load_tokenizer(folder)


def sample_rows(data: Path, work: Path, rows: int, eval_rows: int, seed: int) -> tuple[Path, Path]:
    """`rows` training rows and `eval_rows` held-out rows drawn at random across the file, written as parquet (the
    training file in row groups of 100 rows)."""
    import pyarrow.parquet as pq

    table = pq.read_table(data, columns=["prompt", "response"])
    chosen = random.Random(seed).sample(range(table.num_rows), rows + eval_rows)
    train, held_out = work / f"sample_{rows}_{seed}.parquet", work / f"held_out_{eval_rows}_{seed}.parquet"
    pq.write_table(table.take(chosen[:rows]), train, row_group_size=100)
    pq.write_table(table.take(chosen[rows:]), held_out)
    return train, held_out


def batches_ours(data: Path, tokenizer, batch_size: int, max_len: int, seed: int, window: int):
    from transformers import DataCollatorForSeq2Seq

    from sccl_hf.recipes import resolve_files
    from sccl_hf.tables import load_seq2seq_splits

    args = SimpleNamespace(train_paths=resolve_files([str(data)], "train_files"), eval_paths=[], streaming=True,
                           buffer_size=window, prompt_column="prompt", response_column="response", max_tokens_per_batch=None)  # fmt: skip
    grouping = SimpleNamespace(
        seed=seed, per_device_train_batch_size=batch_size, train_sampling_strategy="group_by_length"
    )
    train, _ = load_seq2seq_splits(args, tokenizer, max_len, grouping)
    collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
    rows = list(train)
    return [collate(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]


def batches_chatlm(data: Path, tokenizer, batch_size: int, max_len: int, seed: int):
    from transformers import DataCollatorForSeq2Seq

    from sccl_hf.recipes import resolve_files
    from sccl_hf.tables import load_table, tokenize_pairs

    table = load_table(resolve_files([str(data)], "train_files"), ["prompt", "response"])
    rows = list(table.map(tokenize_pairs(tokenizer, max_len), batched=True, remove_columns=["prompt", "response"]))
    random.Random(seed).shuffle(rows)
    collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
    return [collate(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]


def real_tokens(batch) -> int:
    return int(batch["attention_mask"].sum() + (batch["labels"] != -100).sum())


def positions(batch) -> int:
    return int(batch["input_ids"].numel() + batch["labels"].numel())


def train(batches, tokenizer, preset: str, max_len: int, seed: int):
    import torch

    from sccl_hf.model import build_config, new_model

    torch.manual_seed(seed)
    model = new_model(build_config(preset, tokenizer, max_seq_len=max_len, dropout_rate=0.0)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens, seconds = 0, 0.0
    for batch in batches:
        started = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        seconds += time.perf_counter() - started
        tokens += real_tokens(batch)
    return model.eval(), {"tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds}


def held_out_loss(model, held_out: Path, tokenizer, max_len: int) -> float:
    """Mean loss per response token ([EOS] included) on the held-out rows: both models scored on the same rows."""
    import torch

    from sccl_hf.scoring import score_responses
    from sccl_hf.tables import load_table

    table = load_table([held_out], ["prompt", "response"])
    with torch.no_grad():
        scores = score_responses(model, tokenizer, list(table["prompt"]), list(table["response"]), max_len=max_len)
    return -sum(s.log_prob for s in scores) / sum(s.tokens for s in scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=800)
    parser.add_argument("--eval-rows", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--max-seq-len", type=int, default=256)
    parser.add_argument("--work", default="runs/bench/data_path")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    data = SHARED / "sft" / "sft_mix_44k.parquet"
    if not data.is_file():
        sys.exit(f"needs {data} (../shared/data or $SCCL_SHARED_DATA)")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = tokenizer_for(data, work)
    train_rows, held_out = sample_rows(data, work, args.rows, args.eval_rows, args.seed)
    paths = {
        "chatlm": batches_chatlm(train_rows, tokenizer, args.batch_size, args.max_seq_len, args.seed),
        "ours": batches_ours(train_rows, tokenizer, args.batch_size, args.max_seq_len, args.seed, args.rows),
    }
    results = {"machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}", "data": str(data.name),
               "rows": args.rows, "held_out_rows": args.eval_rows, "preset": args.preset,
               "batch_size": args.batch_size, "max_seq_len": args.max_seq_len}  # fmt: skip
    for name, batches in paths.items():
        share = sum(map(real_tokens, batches)) / sum(map(positions, batches))
        model, run = train(batches, tokenizer, args.preset, args.max_seq_len, args.seed)
        results[name] = {"steps": len(batches), "real_token_share": round(share, 3), "real_tokens": run["tokens"],
                         "seconds": round(run["seconds"], 1), "tokens_per_second": round(run["tokens_per_second"], 1),
                         "held_out_loss": round(held_out_loss(model, held_out, tokenizer, args.max_seq_len), 4)}  # fmt: skip
    assert results["ours"]["real_tokens"] == results["chatlm"]["real_tokens"], "both paths must see the same rows"
    results["speedup"] = round(results["ours"]["tokens_per_second"] / results["chatlm"]["tokens_per_second"], 2)
    print(json.dumps(results, indent=2))
    chatlm, ours = results["chatlm"], results["ours"]
    print(
        f"| data path, {args.preset}, batch {args.batch_size}, the same {args.rows} rows of sft_mix_44k "
        f"({chatlm['real_tokens']} real tokens) | ChatLM's: {chatlm['tokens_per_second']:.0f} non-pad tokens/s, "
        f"{chatlm['real_token_share']:.0%} real | ours: {ours['tokens_per_second']:.0f}, {ours['real_token_share']:.0%} "
        f"real | **x{results['speedup']}**; held-out loss ({args.eval_rows} rows) {chatlm['held_out_loss']} -> "
        f"{ours['held_out_loss']} |"
    )


if __name__ == "__main__":
    main()
