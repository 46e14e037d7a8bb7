"""Issue 22: does the demo's DPO step keep (or raise) held-out exact match? The demo's steps for several seeds,
with DPO variants trained from the same SFT model of each seed; prints a markdown table of held-out exact match
after SFT and after each DPO variant, and the mean change per variant.

    python dev/demo_dpo_seeds.py [--seeds 0 1 2] [--variants shipped sampled]      (~2.5 minutes a seed, 2 cores)

Seeds change the generated corpus (demo_data), the initialisation and the data order (pretrain, SFT, DPO).
Variants (extra `--key value` words per recipe file) are listed in VARIANTS; `shipped` is recipes/demo as it is.
"""

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sccl_hf.apps.demo import run_step  # noqa: E402

OUT = Path("runs/demo")
SHARED = ["data", "tokenizer", "pretrain", "sft", "eval_sft"]
VARIANTS = {
    "shipped": {},  # greedy mistakes of the SFT model on its training questions + the generated wrong answers
    # the SFT model's *sampled* answers that differ from the reference: more of its own mistakes, on-policy
    "sampled": {"dpo_data": ["--search_type", "sampling"]},
}


def run(name: str, words: list[str]) -> None:
    run_step(f"sccl run recipes/demo/{name}.yaml " + " ".join(words))


def exact_match(folder: Path) -> float:
    return json.loads((folder / "results.json").read_text())["results"]["exact_match"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    table = []
    for seed in args.seeds:
        for name in SHARED:
            run(name, ["--seed", str(seed)] if name in ("data", "pretrain", "sft") else [])
        row = {"seed": seed, "sft": exact_match(OUT / "eval" / "sft")}
        for variant in args.variants:
            extra = VARIANTS[variant]
            mistakes = f"runs/demo/dpo_data/{variant}.jsonl"
            run("dpo_data", ["--output_file", mistakes, *extra.get("dpo_data", [])])
            run("dpo", ["--seed", str(seed), "--train_files", "runs/demo/data/dpo.parquet", mistakes,
                        "--output_dir", f"runs/demo/dpo_{variant}", *extra.get("dpo", [])])  # fmt: skip
            run("eval_dpo", ["--model_name_or_path", f"runs/demo/dpo_{variant}",
                             "--output_dir", f"runs/demo/eval/dpo_{variant}"])  # fmt: skip
            row[variant] = exact_match(OUT / "eval" / f"dpo_{variant}")
            row[f"{variant} pairs"] = sum(1 for _ in open(mistakes, encoding="utf-8"))
        table.append(row)
        print(json.dumps(row), flush=True)
    print("\n| seed | after SFT | " + " | ".join(f"after DPO ({v}) | own pairs" for v in args.variants) + " |")
    print("|---|---:|" + "---:|---:|" * len(args.variants))
    for row in table:
        cells = " | ".join(
            f"{row[v]:.1%} ({(row[v] - row['sft']) * 100:+.1f}) | {row[v + ' pairs']}" for v in args.variants
        )
        print(f"| {row['seed']} | {row['sft']:.1%} | {cells} |")
    for variant in args.variants:
        changes = [(row[variant] - row["sft"]) * 100 for row in table]
        print(f"{variant}: mean change {sum(changes) / len(changes):+.2f} points, worst {min(changes):+.2f}")


if __name__ == "__main__":
    main()
