"""Stage `eval_gen`: answer a held-out prompt/response table with a model and score the answers.

Reads: a model directory, prompt/response parquet or JSON lines. Writes, in `output_dir`: `predictions.jsonl`
(prompt, answer, reference, exact match, whether the answer ended in [EOS]) and `results.md`; the scores go to
`results.json`. Scores: exact match after normalisation (NFKC, a final full stop ignored), character BLEU-4
(sacrebleu, mean over rows) and ROUGE-L (rouge_score, mean F), answer and reference length in characters, and the
share of answers the model closed with [EOS] before `max_new_tokens`.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from sccl_hf.recipes import GenerationTableArguments


# 1. arguments
@dataclass
class GenerationEvalArguments(GenerationTableArguments):
    """The model, the table and the generation settings (all shared with eval_ie)."""


RECIPE_ARGUMENTS = (GenerationEvalArguments,)


def main(args: GenerationEvalArguments) -> dict:

    from sccl_hf.engine import load_engine
    from sccl_hf.metrics import bleu4_chars, exact_match, markdown_table, normalize_answer, rouge_l_chars
    from sccl_hf.tables import table_rows

    # 2. inputs
    rows = table_rows(args.eval_paths, max_rows=args.max_rows)
    # 3-4. model and work: the model (torch or CTranslate2) answers in batches
    print(f"eval_gen: answering {len(rows)} prompts in batches of {args.batch_size} ...", flush=True)
    engine = load_engine(args.model_name_or_path, args.device, args.engine)
    answers = engine.answer([r["prompt"] for r in rows], args.search_type, args.max_new_tokens or None,
                            args.batch_size, progress=True, stop=args.stop)  # fmt: skip
    texts, references = [a.text for a in answers], [r["response"] for r in rows]
    results = {
        "exact_match": exact_match(texts, references),
        "bleu4": bleu4_chars(texts, references),
        "rouge_l": rouge_l_chars(texts, references),
        "ended_with_eos": sum(a.ended for a in answers) / max(len(answers), 1),
        "mean_answer_chars": sum(map(len, texts)) / max(len(texts), 1),
        "mean_reference_chars": sum(map(len, references)) / max(len(references), 1),
        "rows": len(rows),
        "model": args.model_name_or_path,
        "search_type": args.search_type,
    }
    # 5. save
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    with open(output / "predictions.jsonl", "w", encoding="utf-8") as f:
        for row, answer in zip(rows, answers):
            match = normalize_answer(answer.text) == normalize_answer(row["response"])
            record = {"prompt": row["prompt"], "answer": answer.text, "reference": row["response"], "match": match}
            f.write(json.dumps({**record, "ended": answer.ended}, ensure_ascii=False) + "\n")
    table = markdown_table(
        ["rows", "exact match", "BLEU-4 (chars)", "ROUGE-L (chars)", "ended with [EOS]", "answer chars", "reference chars"],
        [[results["rows"], *(round(results[k], 4) for k in ("exact_match", "bleu4", "rouge_l", "ended_with_eos")),
          round(results["mean_answer_chars"], 1), round(results["mean_reference_chars"], 1)]],
    )  # fmt: skip
    title = f"# eval_gen: {args.model_name_or_path}\n\n{args.search_type} search on {', '.join(args.eval_files)}\n\n"
    (output / "results.md").write_text(title + table + "\n", encoding="utf-8")
    # 6. summary
    print(
        f"eval_gen: exact match {results['exact_match']:.1%}, BLEU-4 {results['bleu4']:.3f}, ROUGE-L "
        f"{results['rouge_l']:.3f}, ended with [EOS] {results['ended_with_eos']:.1%} on {len(rows)} rows "
        f"({args.model_name_or_path})"
    )
    return results
