"""Keep a finished run as a reference run under docs/reference/NAME/: each training stage's loss curve (CSV and
PNG) and every stage's headline figures, with the commit and the machine, and its `results.json`, so a user can compare a
run of their own with what a healthy one looks like (`python dev/compare_reference.py runs/mini mini`).

    .venv/bin/python dev/save_reference.py runs/demo demo      # after `sccl demo`
"""

import os
import platform
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from sccl_hf.report import _number, find_stages  # noqa: E402


def figures(record: dict) -> str:
    """The stage's headline numbers: its scalar results (the Trainer's own metrics stay in the run's folder)."""
    results = record.get("results") or {}
    flat = {k: v for k, v in results.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return ", ".join(f"{k} {_number(v)}" for k, v in sorted(flat.items()))


def main(run_dir: str, name: str) -> None:
    run, target = Path(run_dir), ROOT / "docs" / "reference" / name
    stages = find_stages(run)  # in the order they finished, checkpoints left out
    if not stages:
        sys.exit(f"{run}: no results.json below it (run the stages first)")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    commits = sorted({record.get("git_commit") or "unknown" for _, record in stages})
    lines = [f"# Reference run: {name}", "",
             f"Made from `{run}`, run at commit {', '.join(c[:7] for c in commits)} on {platform.machine()}, "
             f"{len(os.sched_getaffinity(0))} CPU cores, no GPU, "
             f"Python {platform.python_version()}. Written by `python dev/save_reference.py {run_dir} {name}`.", "",
             "| stage | folder | recipe | seconds | figures |", "|---|---|---|---:|---|"]  # fmt: skip
    for folder_path, record in stages:
        folder = folder_path.relative_to(run)
        seconds = record.get("elapsed_seconds", "")
        lines.append(f"| {record.get('stage')} | {folder} | `{record.get('recipe')}` | {seconds} | {figures(record)} |")
        kept = target / str(folder).replace("/", "_")
        kept.mkdir(exist_ok=True)
        shutil.copy2(folder_path / "results.json", kept / "results.json")  # for dev/compare_reference.py
        for log in ("training_log.csv", "training_log.png"):
            if (folder_path / log).is_file():
                shutil.copy2(folder_path / log, kept / log)
    lines += ["", "Loss curves: `<stage>/training_log.csv` (every logged loss and learning rate) and its plot.", ""]
    for png in sorted(target.glob("*/training_log.png")):
        lines.append(f"![{png.parent.name}]({png.parent.name}/training_log.png)")
    report = run / "report.md"  # `sccl report`: its sample answers (questions, reference, each model's answer)
    if report.is_file() and "\n## Sample answers\n" in (text := report.read_text(encoding="utf-8")):
        section = text.split("\n## Sample answers\n", 1)[1].split("\n## ", 1)[0]
        lines += ["", "## Sample answers", section.rstrip()]
    (target / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"reference run written to {target}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
