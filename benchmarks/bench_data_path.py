"""Non-pad tokens per second of the training data path: ours (streamed, grouped by length inside a 10k-row
shuffle buffer) against ChatLM-mini-Chinese's (random order, prompt and response padded to the longest in the
batch), on the same model, data (`sft/sft_mix_44k`) and batch size, in one run.

Both paths feed the same training step (the model's forward and backward, AdamW); the batches come from
`sccl_hf.tables` (ours: `load_seq2seq_splits` on a stream, grouped by length; ChatLM's: the same rows in
random order through `DataCollatorForSeq2Seq`). Reported: the share of computed positions that are real tokens
(over the whole data set), non-pad tokens per second of training, the ratio, and the loss of each run at the same
number of real tokens (the smaller of the two totals), so that speed is not bought with a worse curve.

    python benchmarks/bench_data_path.py [--steps 40] [--batch-size 16] [--preset small] [--max-seq-len 256]

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


def batches_ours(data: Path, tokenizer, batch_size: int, max_len: int, seed: int):
    from transformers import DataCollatorForSeq2Seq

    from sccl_hf.recipes import resolve_files
    from sccl_hf.tables import load_seq2seq_splits

    args = SimpleNamespace(train_paths=resolve_files([str(data)], "train_files"), eval_paths=[], streaming=True,
                           buffer_size=10_000, prompt_column="prompt", response_column="response", max_tokens_per_batch=None)  # fmt: skip
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


def train(batches, tokenizer, preset: str, max_len: int, steps: int, seed: int) -> dict:
    import torch

    from sccl_hf.model import build_config, new_model

    torch.manual_seed(seed)
    model = new_model(build_config(preset, tokenizer, max_seq_len=max_len, dropout_rate=0.0)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    curve, tokens, seconds = [], 0, 0.0
    for batch in batches[:steps]:
        started = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        seconds += time.perf_counter() - started
        tokens += real_tokens(batch)
        curve.append((tokens, loss.item()))
    return {"tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds, "curve": curve}


def loss_at(curve, tokens: int, window: int = 5) -> float:
    """Mean loss of the `window` steps up to the one where `tokens` real tokens had been seen."""
    last = next(i for i, (seen, _) in enumerate(curve) if seen >= tokens)
    chosen = curve[max(0, last - window + 1) : last + 1]
    return sum(loss for _, loss in chosen) / len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
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
    paths = {
        "chatlm": batches_chatlm(data, tokenizer, args.batch_size, args.max_seq_len, args.seed),
        "ours": batches_ours(data, tokenizer, args.batch_size, args.max_seq_len, args.seed),
    }
    results = {"machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}", "data": str(data.name),
               "preset": args.preset, "batch_size": args.batch_size, "max_seq_len": args.max_seq_len,
               "steps": args.steps}  # fmt: skip
    runs = {}
    for name, batches in paths.items():
        share = sum(map(real_tokens, batches)) / sum(map(positions, batches))
        run = train(batches, tokenizer, args.preset, args.max_seq_len, args.steps, args.seed)
        runs[name] = run
        results[name] = {"real_token_share": round(share, 3), "tokens_per_second": round(run["tokens_per_second"], 1),
                         "real_tokens": run["tokens"], "seconds": round(run["seconds"], 1)}  # fmt: skip
    common = min(r["tokens"] for r in runs.values())
    for name, run in runs.items():
        results[name]["loss_at_common_tokens"] = round(loss_at(run["curve"], common), 4)
    results["common_tokens"] = common
    results["speedup"] = round(runs["ours"]["tokens_per_second"] / runs["chatlm"]["tokens_per_second"], 2)
    print(json.dumps(results, indent=2))
    print(
        f"| data path, {args.preset}, batch {args.batch_size}, sft_mix_44k | real tokens {results['chatlm']['real_token_share']:.0%}"
        f" -> {results['ours']['real_token_share']:.0%} of positions | {results['chatlm']['tokens_per_second']:.0f} -> "
        f"{results['ours']['tokens_per_second']:.0f} non-pad tokens/s | **x{results['speedup']}** | loss at "
        f"{common} tokens {results['chatlm']['loss_at_common_tokens']} -> {results['ours']['loss_at_common_tokens']} |"
    )


if __name__ == "__main__":
    main()
