"""The demo's preference step three ways, same seeds: SFT -> DPO (recipes/demo/dpo.yaml), SFT -> SimPO
(recipes/demo/simpo.yaml, the same pairs), and ORPO from the pretrained model with as many steps as SFT and DPO
together (recipes/demo/orpo.yaml). Prints held-out exact match (the demo's 173 unseen phrasings) and the seconds
of each preference run, per seed and on average.

    python benchmarks/bench_preference_demo.py [--seeds 0 1 2]        (~5 minutes a seed, 2 cores)

ORPO has no SFT stage to learn the answers from, so its pairs are the SFT rows (each with another row's answer as
the rejected one, a fixed shuffle) plus the demo's generated preference pairs; SFT + DPO saw the same chosen texts.
Everything is written under runs/demo (the demo's own folder: run `sccl demo` again afterwards for its figures).
"""

import argparse
import json
import os
import random
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from sccl_hf.apps.demo import run_step  # noqa: E402

OUT = Path("runs/demo")


def run(recipe: str, *words: str) -> None:
    run_step(f"sccl run recipes/demo/{recipe}.yaml " + " ".join(words))


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())["results"]


def orpo_pairs(seed: int) -> Path:
    """The SFT rows as pairs: each answer chosen, another row's answer rejected."""
    rows = pq.read_table(OUT / "data" / "sft.parquet").to_pylist()
    others = [r["response"] for r in rows]
    random.Random(seed).shuffle(others)
    pairs = [{"prompt": r["prompt"], "chosen": r["response"], "rejected": o} for r, o in zip(rows, others)
             if o != r["response"]]  # fmt: skip
    path = OUT / "data" / "sft_pairs.parquet"
    pq.write_table(pa.Table.from_pylist(pairs), path)
    return path


def evaluate(name: str) -> float:
    run("eval_dpo", "--model_name_or_path", str(OUT / name), "--output_dir", str(OUT / "eval" / name))
    return results(OUT / "eval" / name)["exact_match"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    table = []
    for seed in args.seeds:
        for name in ("data", "tokenizer", "pretrain", "sft", "eval_sft", "dpo_data"):
            run(name, *(["--seed", str(seed)] if name in ("data", "pretrain", "sft") else []))
        row = {"seed": seed, "sft": results(OUT / "eval" / "sft")["exact_match"]}
        run("dpo", "--seed", str(seed))
        run("simpo", "--seed", str(seed))
        steps = results(OUT / "sft")["steps"] + results(OUT / "dpo")["steps"]
        pairs = [str(orpo_pairs(seed)), str(OUT / "data" / "dpo.parquet")]
        run("orpo", "--seed", str(seed), "--max_steps", str(steps), "--train_files", *pairs)
        for name in ("dpo", "simpo", "orpo"):
            row[name] = evaluate(name)
            row[f"{name} s"] = results(OUT / name)["metrics"]["train_runtime"]
        row["sft s"] = results(OUT / "sft")["metrics"]["train_runtime"]
        row["orpo steps"] = steps
        table.append(row)
        print(json.dumps(row), flush=True)
    print(
        "\n| seed | SFT | SFT → DPO | SFT → SimPO | ORPO (from pretrained) | s: SFT + DPO | s: SFT + SimPO | s: ORPO |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in table:
        print(f"| {r['seed']} | {r['sft']:.1%} | {r['dpo']:.1%} | {r['simpo']:.1%} | {r['orpo']:.1%} | "
              f"{r['sft s'] + r['dpo s']:.0f} | {r['sft s'] + r['simpo s']:.0f} | {r['orpo s']:.0f} |")  # fmt: skip
    mean = {k: statistics.mean(r[k] for r in table) for k in ("sft", "dpo", "simpo", "orpo")}
    print(f"| mean | {mean['sft']:.1%} | {mean['dpo']:.1%} | {mean['simpo']:.1%} | {mean['orpo']:.1%} | | | |")


if __name__ == "__main__":
    main()
