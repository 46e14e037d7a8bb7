"""Stage `eval_ie`: triple extraction (DuIE) scored by exact triple match, ChatLM-mini-Chinese's downstream task.

Reads: a model directory fine-tuned to answer a sentence with `[(s,p,o),...]`, a prompt/response table whose
responses are the reference triples in that form. Writes, in `output_dir`: `predictions.jsonl` (sentence, answer,
parsed and reference triples, parse status) and `results.md`; precision, recall and F1 overall and per predicate,
and how many answers were well formed, truncated (complete triples kept) or malformed (counted as no triples), go
to `results.json`.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from sccl_hf.recipes import GenerationTableArguments


# 1. arguments
@dataclass
class TripleEvalArguments(GenerationTableArguments):
    output_dir: str = "runs/eval/ie"
    compare_with: str = field(
        default="",
        metadata={"help": "another eval_ie output folder on the same sentences: F1 difference with a paired "
                  "bootstrap 95% interval (pretrained against scratch)"},
    )  # fmt: skip
    bootstrap_samples: int = 2000

    def __post_init__(self):
        super().__post_init__()
        if self.compare_with and not (Path(self.compare_with) / "predictions.jsonl").is_file():
            raise FileNotFoundError(
                f"compare_with: '{self.compare_with}' has no predictions.jsonl (run that eval_ie stage first)"
            )


RECIPE_ARGUMENTS = (TripleEvalArguments,)


def main(args: TripleEvalArguments) -> dict:

    from sccl_hf.engine import load_engine
    from sccl_hf.metrics import markdown_table
    from sccl_hf.tables import table_rows
    from sccl_hf.triples import TripleScores, entities_in_sentence, parse_triples, status_counts

    # 2. inputs: the references are parsed with the same parser as the answers
    rows = table_rows(args.eval_paths, max_rows=args.max_rows)
    references = [parse_triples(r["response"]) for r in rows]
    unreadable = sum(p.status != "ok" for p in references)
    if unreadable:
        logging.getLogger(__name__).warning(
            "eval_ie: %d reference responses are not well-formed [(s,p,o),...]", unreadable
        )
    # 3-4. model and work: the model (torch or CTranslate2) answers in batches
    print(f"eval_ie: extracting triples from {len(rows)} sentences in batches of {args.batch_size} ...", flush=True)
    engine = load_engine(args.model_name_or_path, args.device, args.engine)
    answers = engine.answer([r["prompt"] for r in rows], args.search_type, args.max_new_tokens or None,
                            args.batch_size, progress=True, stop=args.stop)  # fmt: skip
    parsed = [parse_triples(a.text) for a in answers]
    scores = TripleScores()
    for prediction, reference in zip(parsed, references):
        scores.add(prediction.triples, reference.triples)
    statuses = status_counts(parsed)
    by_predicate = {p: s.as_dict() for p, s in sorted(scores.by_predicate.items(), key=lambda kv: -kv[1].reference)}
    # Does the model read its input? Entities are copied from the sentence, so a predicted subject or object that
    # is not in the sentence was invented (issue 22: a model that never learnt to copy scores F1 0 with well-formed
    # answers and the right predicates).
    results = {
        **scores.as_dict(),
        "predicted_entities_in_sentence": entities_in_sentence(
            [r["prompt"] for r in rows], [p.triples for p in parsed]
        ),
        "rows": len(rows),
        "answers": statuses,
        "answers_cut_at_max_new_tokens": sum(not a.ended for a in answers),
        "references_not_well_formed": unreadable,
        "by_predicate": by_predicate,
        "model": args.model_name_or_path,
    }
    if args.compare_with:
        results["comparison"] = compare(args, rows, parsed, references)
    # 5. save
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    with open(output / "predictions.jsonl", "w", encoding="utf-8") as f:
        for row, answer, prediction, reference in zip(rows, answers, parsed, references):
            record = {
                "prompt": row["prompt"],
                "answer": answer.text,
                "status": prediction.status,
                "predicted": prediction.triples,
                "reference": reference.triples,
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    overall = markdown_table(
        ["rows", "precision", "recall", "F1", "predicted", "reference", "correct", "well formed", "truncated", "malformed",
         "predicted entities in the sentence"],
        [[len(rows), round(scores.precision, 4), round(scores.recall, 4), round(scores.f1, 4), scores.predicted,
          scores.reference, scores.correct, statuses["ok"], statuses["truncated"], statuses["malformed"],
          "-" if results["predicted_entities_in_sentence"] is None else f"{results['predicted_entities_in_sentence']:.1%}"]],
    )  # fmt: skip
    predicates = markdown_table(
        ["predicate", "reference", "predicted", "correct", "precision", "recall", "F1"],
        [[p, s["reference"], s["predicted"], s["correct"], round(s["precision"], 4), round(s["recall"], 4),
          round(s["f1"], 4)] for p, s in by_predicate.items()],
    )  # fmt: skip
    comparison = ""
    if args.compare_with:
        c = results["comparison"]
        comparison = "\n\n" + markdown_table(
            ["model", "F1", "other model", "its F1", "F1 difference", "95% interval (paired bootstrap)", "sentences"],
            [[args.model_name_or_path, round(scores.f1, 4), c["model"], round(c["f1"], 4),
              round(c["f1_difference"], 4), f"[{c['interval_95'][0]:.4f}, {c['interval_95'][1]:.4f}]", c["sentences"]]],
        )  # fmt: skip
    (output / "results.md").write_text(
        f"# eval_ie: {args.model_name_or_path}\n\n{overall}{comparison}\n\n## Per predicate\n\n{predicates}\n",
        encoding="utf-8",
    )
    # 6. summary
    if args.compare_with:
        c = results["comparison"]
        print(
            f"eval_ie: F1 {scores.f1:.3f} against {c['f1']:.3f} ({c['model']}): difference {c['f1_difference']:+.3f}, "
            f"95% interval [{c['interval_95'][0]:+.3f}, {c['interval_95'][1]:+.3f}]"
        )
    print(
        f"eval_ie: precision {scores.precision:.3f}, recall {scores.recall:.3f}, F1 {scores.f1:.3f} on {len(rows)} "
        f"sentences; answers well formed {statuses['ok']}, truncated {statuses['truncated']}, malformed "
        f"{statuses['malformed']} ({args.model_name_or_path})"
    )
    return results


def compare(args: TripleEvalArguments, rows: list[dict], parsed: list, references: list) -> dict:
    """This model's F1 against another eval_ie run's on the same sentences (`compare_with`), with a paired
    bootstrap interval of the difference; the other run's rows must be these sentences, in this order."""

    from sccl_hf.triples import paired_bootstrap_f1, row_counts

    path = Path(args.compare_with) / "predictions.jsonl"
    other = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if [o["prompt"] for o in other] != [r["prompt"] for r in rows]:
        raise ValueError(f"compare_with: {path} scored other sentences than {', '.join(args.eval_files)}")
    ours = [row_counts(p.triples, r.triples) for p, r in zip(parsed, references)]
    theirs = [row_counts([tuple(t) for t in o["predicted"]], [tuple(t) for t in o["reference"]]) for o in other]
    record = json.loads((Path(args.compare_with) / "results.json").read_text(encoding="utf-8"))
    bootstrap = paired_bootstrap_f1(ours, theirs, samples=args.bootstrap_samples)
    return {"model": record["results"].get("model", args.compare_with), "f1": record["results"]["f1"], **bootstrap}
