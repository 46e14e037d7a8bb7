"""Stage `dpo_data`: preference pairs from an SFT model, ChatLM-mini-Chinese's way.

Reads: the SFT model, a prompt/response reference table. Writes: prompt/chosen/rejected JSON lines.
`chosen` is the reference answer; `rejected` is what the SFT model generates for the same prompt. Rows where the
generation equals the reference teach nothing and are dropped (counted, and kept in `<output>.dropped.jsonl` for
inspection). Output is appended batch by batch: an interrupted run, started again, skips every prompt already
written to either file. `<output>.model.json` records which weights and search settings wrote them: when either
has changed since (a retrained SFT model, greedy changed to sampling), the earlier files are moved aside, named
after those weights, and the run starts again, so new pairs never mix with answers written another way.
"""

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sccl_hf.errors import DataError
from sccl_hf.model_folder import weights_fingerprint
from sccl_hf.recipes import required_files


# 1. arguments
@dataclass
class DPODataArguments:
    model_name_or_path: str = field(default="", metadata={"help": "the SFT model that writes the rejected answers"})
    reference_files: list[str] = field(default_factory=list, metadata={"help": "prompt/response parquet or jsonl"})
    output_file: str = "runs/dpo_data/dpo.jsonl"
    search_type: str = "sampling"
    max_new_tokens: int = 256
    batch_size: int = 32
    max_rows: int = field(default=0, metadata={"help": "use only the first rows of the reference set (0: all)"})
    seed: int = 42

    def __post_init__(self):
        from sccl_hf.model_folder import model_reference_problem

        if problem := model_reference_problem(self.model_name_or_path, "model_name_or_path"):
            raise FileNotFoundError(problem)
        self.reference_paths = required_files(self.reference_files, "reference_files")
        if Path(self.output_file).suffix != ".jsonl":
            raise ValueError(f"output_file: must end in .jsonl (it is appended to), got '{self.output_file}'")


RECIPE_ARGUMENTS = (DPODataArguments,)


def _done_prompts(path: Path) -> set[str]:
    """Prompts already written to a JSON-lines output. A last line cut short by a crash is removed (its prompt
    is then generated again); a bad line anywhere else is an error naming it."""
    if not path.is_file():
        return set()
    lines = path.read_bytes().splitlines(keepends=True)
    done, offset = set(), 0
    for number, raw in enumerate(lines, start=1):
        try:
            done.add(json.loads(raw)["prompt"]) if raw.strip() else None
        except (ValueError, KeyError, TypeError):
            if number < len(lines):
                raise DataError(f"{path}, line {number}: not a complete JSON line; fix or remove it") from None
            with open(path, "r+b") as f:
                f.truncate(offset)
            logging.getLogger(__name__).warning(
                "%s, line %d: cut short by an earlier crash; removed, its prompt is generated again", path, number
            )
            break
        offset += len(raw)
    else:
        if lines and not lines[-1].endswith(b"\n"):  # complete JSON, but the newline was not written
            with open(path, "ab") as f:
                f.write(b"\n")
    return done


def set_aside_other_models_answers(output: Path, dropped_file: Path, writer: dict) -> None:
    """Earlier answers written by other weights or other generation settings (`writer`: the weights' sha256 and
    the search settings) are moved aside (`<name>.<their weights>.jsonl`), never reused."""
    record = output.with_suffix(".model.json")
    earlier = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None
    if earlier and earlier != writer:
        changed = ", ".join(k for k in writer if earlier.get(k) != writer[k])
        tag = str(earlier.get("weights_sha256", "earlier"))[:12]
        for path in (output, dropped_file):
            if path.is_file():
                aside = path.with_suffix(f".{tag}.jsonl")
                path.rename(aside)
                logging.getLogger(__name__).warning(
                    "dpo_data: %s was written with other %s: moved to %s; starting again", path, changed, aside
                )
    output.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(writer) + "\n", encoding="utf-8")


def main(args: DPODataArguments) -> dict:

    import torch
    from tqdm import tqdm

    from sccl_hf.engine import Engine
    from sccl_hf.metrics import normalize_answer
    from sccl_hf.tables import load_table

    torch.manual_seed(args.seed)
    output = Path(args.output_file)
    dropped_file = output.with_suffix(".dropped.jsonl")

    # 2. inputs: the reference rows not yet done by an earlier run of the same weights
    writer = {"weights_sha256": weights_fingerprint(args.model_name_or_path), "search_type": args.search_type,
              "max_new_tokens": args.max_new_tokens, "seed": args.seed}  # fmt: skip
    set_aside_other_models_answers(output, dropped_file, writer)
    rows = load_table(args.reference_paths, ["prompt", "response"]).to_list()
    if args.max_rows:
        rows = rows[: args.max_rows]
    done = _done_prompts(output) | _done_prompts(dropped_file)
    todo = [r for r in rows if r["prompt"] not in done]
    logging.getLogger(__name__).warning(
        "dpo_data: %d prompts, %d already done, %d to generate", len(rows), len(rows) - len(todo), len(todo)
    )

    # 3. model
    engine = Engine.load(args.model_name_or_path)

    # 4. work and 5. save, batch by batch (appended, so an interrupted run loses at most one batch)
    output.parent.mkdir(parents=True, exist_ok=True)
    written = dropped = 0
    with (
        open(output, "a", encoding="utf-8") as out,
        open(dropped_file, "a", encoding="utf-8") as drop,
        tqdm(total=len(todo), desc="dpo_data", unit="prompt", file=sys.stderr) as progress,
    ):
        for start in range(0, len(todo), args.batch_size):
            batch = todo[start : start + args.batch_size]
            answers = engine.generate(
                [r["prompt"] for r in batch], args.search_type, args.max_new_tokens, batch_size=args.batch_size
            )
            for row, answer in zip(batch, answers):
                if normalize_answer(answer) == normalize_answer(row["response"]) or not answer:
                    drop.write(json.dumps({**row, "generated": answer}, ensure_ascii=False) + "\n")
                    dropped += 1
                else:
                    pair = {"prompt": row["prompt"], "chosen": row["response"], "rejected": answer}
                    out.write(json.dumps(pair, ensure_ascii=False) + "\n")
                    written += 1
            out.flush()
            drop.flush()
            progress.update(len(batch))

    # 6. summary
    summary = {"written": written, "dropped_equal_to_reference": dropped, "skipped_already_done": len(rows) - len(todo)}
    print(f"dpo_data: {summary} -> {output.resolve()}")
    return summary
