"""Tokenizer kinds compared on the same text at the same vocabulary size: char-level BPE, byte-level BPE and
word frequency (SCCLM).

    python benchmarks/bench_tokenizers.py [--sizes-mb 25 100 400] [--vocab-size 29298] [--lm-steps 400]

Corpus: the shared pretraining texts (../shared/data or $SCCL_SHARED_DATA: ChatLM sample, poetry, couplets,
reviews, Wikipedia paragraphs, plain text, medical dialogue, and the SFT mix without its last 2,000 rows),
written as lines of text; a size beyond the ~150 MB they hold repeats them. For each size and kind, `sccl run`
of the tokenizer stage in its own process: wall time and the peak memory of its process tree (jieba workers
included; proportional set size, so pages shared after fork count once). On held-out text (`pretrain/chatlm_valid_1k` and the SFT mix's last 2,000 rows): characters per
token, and the share of characters that needed byte fallback. Then the measure that matters: the same `tiny`
model trained for the same budget (same rows, same steps) with each tokenizer of the largest size, and its
held-out loss in bits per character (summed token NLL over the responses of chatlm_valid_1k, / ln 2, / their
characters). word_frequency keeps the most frequent words up to the same vocabulary size (`min_count` 5).
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml
from bench_data_dedup import peak_tree_memory  # benchmarks/ is on sys.path when a script runs

SHARED = Path(os.environ.get("SCCL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CORPUS = [
    ("pretrain/chatlm_train_3k.parquet", ["prompt", "response"]),
    ("pretrain/chinese_poetry_346k.parquet", ["prompt", "response"]),
    ("pretrain/couplets_50k.parquet", ["prompt", "response"]),
    ("pretrain/sentiment_reviews_77k.parquet", ["text"]),
    ("pretrain/zhwiki_paragraphs_cmrc_drcd.parquet", ["response"]),
    ("pretrain/plain_text_misc.parquet", ["text"]),
    ("medical/toyhom_neike_sample_7k.parquet", ["prompt", "response"]),
    ("sft/sft_mix_44k.parquet", ["prompt", "response"]),
]
SFT_HELD_OUT = 2000
KINDS = ("char_bpe", "byte_bpe", "word_frequency")


def corpus_lines() -> list[str]:
    lines = []
    for name, columns in CORPUS:
        table = pq.read_table(SHARED / name, columns=columns)
        if name.startswith("sft/"):
            table = table.slice(0, table.num_rows - SFT_HELD_OUT)
        for column in columns:
            lines += [" ".join(t.split()) for t in table.column(column).to_pylist() if t and t.strip()]
    return lines


def write_corpus(lines: list[str], path: Path, megabytes: int) -> int:
    target, written = megabytes * 2**20, 0
    with open(path, "w", encoding="utf-8") as handle:
        while written < target:
            for line in lines:
                data = line + "\n"
                handle.write(data)
                written += len(data.encode("utf-8"))
                if written >= target:
                    break
    return written


def held_out() -> dict[str, list[str]]:
    valid = pq.read_table(SHARED / "pretrain/chatlm_valid_1k.parquet", columns=["prompt", "response"])
    sft = pq.read_table(SHARED / "sft/sft_mix_44k.parquet", columns=["prompt", "response"])
    sft = sft.slice(sft.num_rows - SFT_HELD_OUT)
    texts = lambda t: [x for c in ("prompt", "response") for x in t.column(c).to_pylist() if x]  # noqa: E731
    return {"chatlm_valid_1k": texts(valid), "sft_held_out": texts(sft)}


def train_tokenizer(kind: str, corpus: Path, vocab_size: int, out: Path) -> dict:
    recipe = {"stage": "tokenizer", "files": [str(corpus)], "kind": kind, "vocab_size": vocab_size,
              "output_dir": str(out), "min_count": 5, "overwrite_output_dir": True}  # fmt: skip
    recipe_path = out.parent / f"{out.name}.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    start = time.perf_counter()
    log = open(out.parent / f"{out.name}.log", "w")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("sccl")), "run", str(recipe_path)], stdout=log, stderr=subprocess.STDOUT
    )
    peak_mb = peak_tree_memory(process, pss=True)  # the forked jieba workers' shared pages count once
    if process.returncode:
        raise SystemExit(f"{kind}: the tokenizer stage failed, see {out.parent / f'{out.name}.log'}")
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": peak_mb}


def text_measures(tokenizer_dir: Path, texts: list[str]) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    tokens = sum(len(ids) for ids in encoded["input_ids"])
    chars = sum(len(t) for t in texts)
    byte_ids = {i for t, i in tokenizer.get_vocab().items() if t.startswith("<0x") and len(t) == 6}
    fallback = 0
    for ids, offsets in zip(encoded["input_ids"], encoded["offset_mapping"]):
        fallback += len({pos for i, (a, b) in zip(ids, offsets) if i in byte_ids for pos in range(a, b)})
    return {"chars_per_token": chars / tokens, "byte_fallback_share": fallback / chars if byte_ids else None}


def bits_per_char(tokenizer_dir: Path, train_rows: list, eval_rows: list, steps: int, max_len: int = 128) -> float:
    import torch
    from transformers import AutoTokenizer, set_seed

    from sccl_hf.model import build_config, new_model

    set_seed(0)
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = new_model(build_config("tiny", tokenizer, max_seq_len=max_len))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)

    def batch(rows):
        enc = tokenizer([p for p, _ in rows], max_length=256, truncation=True, padding=True, return_tensors="pt")
        labels = tokenizer([r for _, r in rows], max_length=256, truncation=True, padding=True, return_tensors="pt")[
            "input_ids"
        ]
        labels[labels == tokenizer.pad_token_id] = -100
        return enc, labels

    model.train()
    for step in range(steps):
        rows = [train_rows[(step * 16 + i) % len(train_rows)] for i in range(16)]
        enc, labels = batch(rows)
        loss = model(**enc, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    nats, chars = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(eval_rows), 32):
            rows = eval_rows[start : start + 32]
            enc, labels = batch(rows)
            logits = model(**enc, labels=labels).logits
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="sum")
            nats += float(nll)
            # the characters the targets cover (a response cut at max_len tokens counts only what was kept)
            chars += sum(len(tokenizer.decode(ids[ids >= 0], skip_special_tokens=True)) for ids in labels)
    return nats / math.log(2) / chars


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[25, 100, 400])
    parser.add_argument("--vocab-size", type=int, default=29_298)
    parser.add_argument("--lm-steps", type=int, default=150)
    parser.add_argument("--lm-max-len", type=int, default=128)
    parser.add_argument("--reuse", type=Path, help="a folder of an earlier run (--keep): only the model runs")
    parser.add_argument("--keep", type=Path, help="keep the tokenizers in this folder")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

    evaluation = held_out()
    lines = [] if args.reuse else corpus_lines()
    results = {"vocab_size": args.vocab_size, "runs": []}
    if args.reuse:
        results = json.loads((args.reuse / "results.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = args.reuse or args.keep or Path(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        largest = max(args.sizes_mb)
        for size in [] if args.reuse else sorted(args.sizes_mb):
            corpus = tmp / f"corpus_{size}mb.txt"
            written = write_corpus(lines, corpus, size)
            for kind in args.kinds:
                out = tmp / f"{kind}_{size}"
                run = {
                    "kind": kind,
                    "size_mb": round(written / 2**20),
                    **train_tokenizer(kind, corpus, args.vocab_size, out),
                }
                saved = json.loads((out / "results.json").read_text())["results"]
                run["vocab_size"] = saved["vocab_size"]
                for name, texts in evaluation.items():
                    run[name] = text_measures(out, texts)
                results["runs"].append(run)
                print(json.dumps(run), flush=True)
            corpus.unlink()
            (tmp / "results.json").write_text(json.dumps(results))
        train = pq.read_table(SHARED / "pretrain/chatlm_train_3k.parquet", columns=["prompt", "response"]).to_pylist()
        valid = pq.read_table(SHARED / "pretrain/chatlm_valid_1k.parquet", columns=["prompt", "response"]).to_pylist()
        train_rows = [(r["prompt"], r["response"]) for r in train]
        eval_rows = [(r["prompt"], r["response"]) for r in valid[:300]]
        for run in results["runs"]:
            if run["size_mb"] >= largest - 1:
                start = time.perf_counter()
                run["bits_per_char"] = bits_per_char(
                    tmp / f"{run['kind']}_{largest}", train_rows, eval_rows, args.lm_steps
                )
                print(
                    json.dumps(
                        {
                            "kind": run["kind"],
                            "bits_per_char": run["bits_per_char"],
                            "seconds": time.perf_counter() - start,
                        }
                    ),
                    flush=True,
                )
    print(json.dumps(results, indent=1))
    print(
        "| kind | corpus | train time | peak RSS | vocab | chars/token chatlm_valid_1k | chars/token SFT held-out | byte fallback (chars) | bits/char (tiny model) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in results["runs"]:
        share = run["chatlm_valid_1k"]["byte_fallback_share"]
        print(
            f"| {run['kind']} | {run['size_mb']} MB | {run['seconds']:.0f} s | {run['peak_rss_mb']:,.0f} MB | {run['vocab_size']:,} "
            f"| {run['chatlm_valid_1k']['chars_per_token']:.2f} | {run['sft_held_out']['chars_per_token']:.2f} "
            f"| {'n/a (bytes)' if share is None else f'{share:.4%}'} | {run.get('bits_per_char', float('nan')):.3f} |"
        )


if __name__ == "__main__":
    main()
