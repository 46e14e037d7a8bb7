"""Peak memory and time of tokenizer training: jieba pieces (ours) against whole sentences (ChatLM's way).

    python benchmarks/bench_tokenizer_memory.py [CORPUS.parquet] [--columns prompt response] [--max-chars N]

Each mode trains in its own process, so each peak RSS is that run's alone; jieba's worker processes (forked,
sharing the parent's pages) are reported apart. Default corpus: the shared poetry
set (../shared/data/pretrain/chinese_poetry_346k.parquet, 23M characters).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT = Path(os.environ.get("SCCL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
DEFAULT = DEFAULT / "pretrain" / "chinese_poetry_346k.parquet"


def run_one(corpus: str, columns: list[str], pretokenize: str, max_chars: int, vocab_size: int) -> dict:
    from sccl_hf.stages.tokenizer import TokenizerArguments
    from sccl_hf.tokenization import new_tokenizer, train

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        tokenizer = train(
            new_tokenizer("char_bpe"),
            TokenizerArguments(
                files=[corpus],
                text_columns=columns,
                output_dir=tmp,
                vocab_size=vocab_size,
                pretokenize=pretokenize,
                max_chars=max_chars,
            ),
        )
        seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest jieba worker
    return {
        "pretokenize": pretokenize,
        "seconds": seconds,
        "peak_rss_mb": peak_mb,
        "worker_peak_rss_mb": worker_mb,
        "vocab": len(tokenizer),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", nargs="?", default=str(DEFAULT))
    parser.add_argument("--columns", nargs="+", default=["prompt", "response"])
    parser.add_argument("--max-chars", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=29_298)
    parser.add_argument("--one", choices=["jieba", "none"], help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.corpus, args.columns, args.one, args.max_chars, args.vocab_size)))
        return
    if not Path(args.corpus).is_file():
        raise SystemExit(f"corpus not found: {args.corpus} (give a parquet file, or set SCCL_SHARED_DATA)")
    results = {}
    for mode in ("none", "jieba"):  # "none" (whole sentences) is the baseline
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                args.corpus,
                "--columns",
                *args.columns,
                "--max-chars",
                str(args.max_chars),
                "--vocab-size",
                str(args.vocab_size),
                "--one",
                mode,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results[mode] = json.loads(child.stdout.strip().splitlines()[-1])
    base = results["none"]
    print(f"corpus {args.corpus}, vocab {args.vocab_size}")
    for mode, r in results.items():
        workers = f", largest jieba worker {r['worker_peak_rss_mb']:.0f} MB" if r["worker_peak_rss_mb"] else ""
        print(
            f"  pretokenize={mode:5s}  {r['seconds']:7.1f} s  peak RSS {r['peak_rss_mb']:7.0f} MB{workers}  "
            f"(x{r['peak_rss_mb'] / base['peak_rss_mb']:.2f} RSS, x{r['seconds'] / base['seconds']:.2f} time of whole sentences)"
        )


if __name__ == "__main__":
    main()
