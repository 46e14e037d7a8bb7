"""`sccl report RUN_DIR`: one report card for every stage under a run folder.

Every stage leaves `results.json` (and evaluation stages a `results.md` table, training stages a loss plot) beside
its output. The report gathers them, in the order the stages finished, into `RUN_DIR/report.md` and a small HTML
page, `RUN_DIR/report.html`, that shows the plots (markdown-it renders the same markdown).
"""

import html
import json
from pathlib import Path

PLOTS = ("training_log.png", "lengths.png")  # training stages' loss plot, the data stage's length histogram
TABLES = ("results.md", "report.md")  # evaluation stages' tables, the data stage's report
CHANCE = 0.25  # C-Eval and CMMLU: four choices
SAMPLE_ANSWERS = 10  # questions shown with every eval_gen stage's answer beside the reference


def find_stages(run_dir: Path) -> list[tuple[Path, dict]]:
    """(folder, results.json record) of every stage under `run_dir`, in the order they finished. A
    results.json that is not a stage's record is skipped; one that cannot be read is an error naming it."""
    stages = []
    for path in sorted(Path(run_dir).rglob("results.json")):
        if any(part.startswith(".") or part.startswith("checkpoint-") for part in path.relative_to(run_dir).parts):
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: not readable JSON ({error})") from error
        if isinstance(record, dict) and "stage" in record and "results" in record:
            stages.append((path.parent, record))
    return sorted(stages, key=lambda s: s[1].get("finished_at") or "")


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def headline(stage: str, results: dict) -> str:
    """The few figures that say how a stage went, as one line."""
    if stage == "eval_choice":
        parts = [
            f"{method} {summary['overall']['accuracy']:.2%}"
            for method, summary in results.get("methods", {}).items()
            if summary["overall"]["accuracy"] is not None
        ]
        questions = next(iter(results.get("methods", {}).values()), {}).get("overall", {}).get("questions", 0)
        return (
            f"{results.get('benchmark')} {results.get('split')} {results.get('num_fewshot')}-shot, "
            f"{questions} questions: " + ", ".join(parts) + f" (chance {CHANCE:.0%}: four choices)"
        )
    if stage == "eval_ie" and "comparison" in results:
        c = results["comparison"]
        low, high = c["interval_95"]
        return (
            f"precision {_number(results['precision'])}, recall {_number(results['recall'])}, F1 "
            f"{_number(results['f1'])} against {_number(c['f1'])} ({c['model']}): difference "
            f"{c['f1_difference']:+.4f}, 95% interval [{low:+.4f}, {high:+.4f}], predicted entities in the sentence "
            f"{_number(results.get('predicted_entities_in_sentence'))}, rows {results.get('rows')}"
        )
    keys = {
        "pretrain": ("final_loss", "steps", "prompt_tokens_seen"),
        "sft": ("final_loss", "steps", "prompt_tokens_seen"),
        "dpo": ("final_loss", "steps", "held_out_reward_accuracy", "held_out_rows"),
        "eval_gen": ("exact_match", "bleu4", "rouge_l", "ended_with_eos", "rows"),
        "eval_ppl": ("loss", "perplexity", "bits_per_character", "tokens"),
        "eval_ie": ("precision", "recall", "f1", "predicted_entities_in_sentence", "rows"),
        "tokenizer": ("kind", "vocab_size"),
    }.get(stage)
    if keys is None:  # any other stage: its short scalar results, and those one mapping down ({"rows": {...}})
        flat = {}
        for key, value in results.items():
            inner = value.items() if isinstance(value, dict) else [(None, value)]
            flat.update({f"{key} {k}" if k else key: v for k, v in inner})
        results = flat
        keys = [k for k, v in flat.items() if isinstance(v, (int, float, str)) and len(str(v)) < 40][:6]
    return ", ".join(f"{k} {_number(results[k])}" for k in keys if k in results)


def _cell(text: str, limit: int = 160) -> str:
    """Text for one markdown table cell: one line, `|` escaped, cut at `limit` characters."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sample_answers(run_dir: Path, stages: list[tuple[Path, dict]]) -> list[str]:
    """The first `SAMPLE_ANSWERS` questions of the first eval_gen stage, with its reference and every eval_gen
    stage's answer to the same question (the SFT model's and the DPO model's, side by side), as markdown lines."""
    answers = {}  # stage folder -> {prompt: answer}
    questions = []
    for folder, record in stages:
        path = folder / "predictions.jsonl"
        if record["stage"] != "eval_gen" or not path.is_file():
            continue
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        answers[folder.relative_to(run_dir).as_posix()] = {row["prompt"]: row["answer"] for row in rows}
        questions = questions or [(row["prompt"], row["reference"]) for row in rows[:SAMPLE_ANSWERS]]
    if not questions:
        return []
    names = list(answers)
    lines = ["", "## Sample answers", "", f"The first {len(questions)} questions of the first evaluation set, "
             "each model's greedy answer beside the reference.", "",
             "| question | reference | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]  # fmt: skip
    for prompt, reference in questions:
        cells = [_cell(answers[name].get(prompt, "(not asked)")) for name in names]
        lines.append(f"| {_cell(prompt, 80)} | {_cell(reference)} | " + " | ".join(cells) + " |")
    return lines


def _demote(markdown: str) -> str:
    """A stage's own markdown under the report's stage heading: its headings two levels down."""
    return "\n".join("##" + line if line.startswith("#") else line for line in markdown.splitlines())


def build_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write `report.md` and `report.html` in `run_dir`; returns their paths."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no such run folder: '{run_dir}'")
    stages = find_stages(run_dir)
    if not stages:
        raise FileNotFoundError(f"{run_dir}: no stage results (results.json) under it")
    lines = [f"# Report: {run_dir.resolve().name}", "", "| stage | folder | seconds | results |", "|---|---|---|---|"]
    for folder, record in stages:
        relative = folder.relative_to(run_dir).as_posix() or "."
        results = record["results"] if isinstance(record["results"], dict) else {}
        lines.append(
            f"| {record['stage']} | {relative} | {record.get('elapsed_seconds', '')} | "
            f"{headline(record['stage'], results)} |"
        )
    total = sum(float(record.get("elapsed_seconds") or 0) for _, record in stages)
    lines.append(f"| **all stages** | | **{total:.0f}** ({total / 60:.1f} minutes) | |")
    lines += sample_answers(run_dir, stages)
    for folder, record in stages:
        relative = folder.relative_to(run_dir).as_posix() or "."
        lines += ["", f"## {record['stage']}: {relative}", ""]
        lines.append(f"Recipe: `{record.get('recipe')}`, finished {record.get('finished_at')}, commit "
                     f"{(record.get('git_commit') or 'unknown')[:12]}.")  # fmt: skip
        for name in PLOTS:
            if (folder / name).is_file():
                lines += ["", f"![{record['stage']} {name}]({relative}/{name})"]
        for name in TABLES:
            if (folder / name).is_file() and (folder / name).resolve() != (run_dir / "report.md").resolve():
                lines += ["", _demote((folder / name).read_text(encoding="utf-8")).strip()]
    markdown = "\n".join(lines) + "\n"
    report_md = run_dir / "report.md"
    report_md.write_text(markdown, encoding="utf-8")
    report_html = run_dir / "report.html"
    report_html.write_text(_html(markdown, run_dir.resolve().name), encoding="utf-8")
    return report_md, report_html


def _html(markdown: str, title: str) -> str:
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown)
    style = (
        "body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.2em .5em}"
        "img{max-width:100%}"
    )
    return (
        f'<!doctype html>\n<html lang="zh"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head>\n<body>\n{body}</body></html>\n"
    )
