"""Stage `eval_gen`: answer a held-out prompt/response table with a model and score the answers.

Reads: a model directory, prompt/response parquet or JSON lines. Writes: `predictions.jsonl` (prompt, answer,
reference, whether they match) and the scores in `results.json` in `output_dir`. Scores: exact match after
normalisation (NFKC, a final full stop ignored).
"""

from dataclasses import dataclass, field
from pathlib import Path

from sccl_hf.recipes import resolve_files


# 1. arguments
@dataclass
class GenerationEvalArguments:
    model_name_or_path: str = field(default="", metadata={"help": "the model directory to evaluate"})
    eval_files: list[str] = field(default_factory=list, metadata={"help": "prompt/response parquet or jsonl"})
    output_dir: str = "runs/eval"
    search_type: str = field(default="greedy", metadata={"help": "greedy, beam, sampling or contrastive"})
    max_new_tokens: int = 0
    batch_size: int = 32
    max_rows: int = field(default=0, metadata={"help": "score only the first rows (0: all)"})
    device: str = field(default="auto", metadata={"help": "auto (GPU when present), cpu, cuda, ..."})

    def __post_init__(self):
        if not self.model_name_or_path or not Path(self.model_name_or_path).is_dir():
            raise FileNotFoundError(f"model_name_or_path: no such model directory: '{self.model_name_or_path}'")
        if not self.eval_files:
            raise ValueError("eval_files: give at least one prompt/response parquet or jsonl file")
        self.eval_paths = resolve_files(self.eval_files, "eval_files")


RECIPE_ARGUMENTS = (GenerationEvalArguments,)


def main(args: GenerationEvalArguments) -> dict:
    import json

    from sccl_hf.engine import Engine
    from sccl_hf.metrics import exact_match, normalize_answer
    from sccl_hf.tables import load_table

    # 2. inputs
    rows = load_table(args.eval_paths, ["prompt", "response"]).to_list()
    if args.max_rows:
        rows = rows[: args.max_rows]
    # 3. model
    engine = Engine.load(args.model_name_or_path, args.device)
    # 4. work
    answers = engine.generate(
        [r["prompt"] for r in rows], args.search_type, args.max_new_tokens or None, batch_size=args.batch_size
    )
    references = [r["response"] for r in rows]
    # 5. save
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    with open(output / "predictions.jsonl", "w", encoding="utf-8") as f:
        for row, answer in zip(rows, answers):
            match = normalize_answer(answer) == normalize_answer(row["response"])
            record = {"prompt": row["prompt"], "answer": answer, "reference": row["response"], "match": match}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    # 6. summary
    accuracy = exact_match(answers, references)
    print(f"eval_gen: exact match {accuracy:.1%} on {len(rows)} rows ({args.model_name_or_path})")
    return {
        "exact_match": accuracy,
        "rows": len(rows),
        "model": args.model_name_or_path,
        "search_type": args.search_type,
    }
