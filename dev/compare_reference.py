"""Compare a run of yours with a reference run kept under docs/reference/NAME/ (by dev/save_reference.py): for each
stage both have, every scalar figure of its results.json side by side, with yours / reference.

    .venv/bin/python dev/compare_reference.py runs/mini mini       # after `make mini`
    .venv/bin/python dev/compare_reference.py runs/demo demo       # after `sccl demo`

Seconds depend on the machine; losses, perplexities and scores on the same recipes should land near the
reference's (the chain is seeded; other CPUs round differently).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sccl_hf.report import _number, find_stages  # noqa: E402


def scalars(record: dict) -> dict:
    results = record.get("results") or {}
    return {k: v for k, v in results.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def main(run_dir: str, name: str) -> None:
    reference = ROOT / "docs" / "reference" / name
    theirs = {str(folder.relative_to(reference)): record for folder, record in find_stages(reference)}
    if not theirs:
        sys.exit(f"{reference}: no results.json kept (dev/save_reference.py keeps them)")
    mine = {str(folder.relative_to(run_dir)).replace("/", "_"): record for folder, record in find_stages(Path(run_dir))}
    print(f"| stage | figure | {run_dir} | reference ({name}) | ratio |")
    print("|---|---|---:|---:|---:|")
    for folder, record in theirs.items():
        if folder not in mine:
            print(f"| {folder} | (not in {run_dir}) | | | |")
            continue
        ours, kept = scalars(mine[folder]), scalars(record)
        for key in sorted(kept):
            if key in ours:
                ratio = f"{ours[key] / kept[key]:.3f}" if kept[key] else ""
                print(f"| {folder} | {key} | {_number(ours[key])} | {_number(kept[key])} | {ratio} |")
        seconds = mine[folder].get("elapsed_seconds"), record.get("elapsed_seconds")
        if all(isinstance(s, (int, float)) for s in seconds) and seconds[1]:
            print(f"| {folder} | seconds | {seconds[0]} | {seconds[1]} | {seconds[0] / seconds[1]:.3f} |")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
