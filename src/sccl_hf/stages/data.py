"""Stage `data`: raw public sources into clean, deduplicated, shuffled train/valid/test prompt/response parquet.

Reads: the files each entry of `sources:` names (JSON lines or arrays, CSV/TSV in any encoding, parquet, ShareGPT,
DuIE, plain text, WikiExtractor; see sccl_hf.data_sources). Writes: `train/`, `valid/`, `test/` (parquet, several
files, row groups of `row_group_rows`), `dropped/` (every dropped row with its reason, file and line),
`report.json`, `report.md` and `lengths.png`. Runs on datatrove (sccl_hf.data_pipeline): all local cores by
default, a Ray cluster with `executor: ray`, Slurm with `executor: slurm`. An interrupted run, started again with
the same recipe, does not redo finished tasks.
"""

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sccl_hf.cleaning import CleaningArguments

EXECUTORS = ("local", "ray", "slurm")


# 1. arguments
@dataclass
class DataStageArguments:
    output_dir: str = ""
    sources: list[dict] = field(default_factory=list, metadata={"help": "the raw sources (see data_sources)"})
    test_size: float = field(default=0.0, metadata={"help": "below 1: a share of the rows; 1 or more: a row count"})
    valid_size: float = field(default=0.01, metadata={"help": "below 1: a share of the rows; 1 or more: a row count"})
    seed: int = field(default=42, metadata={"help": "shuffle, split and MinHash permutations"})
    exact_dedup: bool = True
    near_dedup: bool = True
    shingle_chars: int = field(default=5, metadata={"help": "MinHash shingles: character n-grams of this n"})
    minhash_bands: int = field(default=20, metadata={"help": "LSH bands (more: catches less similar pairs)"})
    minhash_rows_per_band: int = field(default=5, metadata={"help": "hashes per band (more: stricter)"})
    minhash_min_similarity: float = field(
        default=0.5,
        metadata={"help": "a candidate pair is a duplicate when its whole signatures agree this much (0: always)"},
    )
    output_shards: int = field(
        default=16, metadata={"help": "train files (and shuffle buckets: each holds rows/output_shards in memory)"}
    )
    row_group_rows: int = field(default=1000, metadata={"help": "rows per parquet row group (streaming shards)"})
    executor: str = field(default="local", metadata={"help": "local (processes), ray or slurm"})
    workers: int = field(default=0, metadata={"help": "tasks run at once (0: every local core)"})
    tasks: int = field(
        default=16, metadata={"help": "partitions (the output depends on this, never on workers or the executor)"}
    )
    executor_options: dict = field(
        default_factory=dict, metadata={"help": "more arguments of datatrove's Ray/Slurm executor (partition, time)"}
    )
    ray_address: str | None = field(default=None, metadata={"help": "a running Ray cluster (none: start one here)"})
    keep_work: bool = field(default=False, metadata={"help": "keep .work (intermediate files) after a finished run"})

    def __post_init__(self):
        from sccl_hf.data_sources import parse_sources

        if not self.output_dir:
            raise ValueError("output_dir: give the folder the train/valid/test files go to")
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor: '{self.executor}' is not one of {', '.join(EXECUTORS)}")
        if self.executor == "slurm" and not {"partition", "time"} <= set(self.executor_options):
            raise ValueError("executor_options: slurm needs at least partition and time")
        for key in ("test_size", "valid_size"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}: {getattr(self, key)} is out of range (0 or more)")
        if 0 < self.test_size < 1 and 0 < self.valid_size < 1 and self.test_size + self.valid_size >= 1:
            raise ValueError("test_size + valid_size: leave some rows for train (their sum is 1 or more)")
        self.workers_given = self.workers > 0
        self.workers = self.workers or len(os.sched_getaffinity(0))
        if self.tasks < 1:
            raise ValueError(f"tasks: {self.tasks} is out of range (1 or more)")
        self.source_specs = parse_sources(self.sources)


RECIPE_ARGUMENTS = (DataStageArguments, CleaningArguments)


def main(args: DataStageArguments, cleaning: CleaningArguments) -> dict:

    from sccl_hf.data_pipeline import (
        WORK,
        build_pipelines,
        candidate_probability,
        fingerprint,
        lsh_threshold,
        make_executor,
    )

    # 2. inputs: the sources (checked when the recipe was read) and any unfinished run of this recipe
    out = Path(args.output_dir)
    work = out / WORK
    recipe_print = fingerprint(
        {
            k: v
            for k, v in vars(args).items()
            if k
            not in (
                "executor",
                "workers",
                "workers_given",
                "keep_work",
                "executor_options",
                "ray_address",
                "source_specs",
            )
        }
        | {"cleaning": vars(cleaning)}
    )
    stamp = work / "recipe.fingerprint"
    if work.is_dir() and stamp.is_file() and stamp.read_text() == recipe_print:
        print(f"data: resuming the unfinished run in {work} (finished tasks are not redone)")
    else:
        if work.is_dir():
            print(f"data: {work} holds an unfinished run of another recipe; starting over")
        for name in (WORK, "train", "valid", "test", "dropped", "report.json", "report.md", "lengths.png"):
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        work.mkdir(parents=True)
        stamp.write_text(recipe_print)

    # 3. model: none. 4. work: the datatrove pipelines, one after another (Slurm: submitted as a chain)
    options = {
        "executor": args.executor,
        "workers": args.workers,
        "workers_given": args.workers_given,
        "executor_options": args.executor_options,
    }

    from loguru import logger

    logger.remove()  # datatrove's run summaries (also in .work/logs/*/stats.json); tasks report their own progress
    logger.add(sys.stderr, level="WARNING")
    if args.executor == "ray":
        import ray

        if not ray.is_initialized():
            ray.init(address=args.ray_address, include_dashboard=False, log_to_driver=False)
    pipelines = build_pipelines(args, cleaning, args.source_specs)
    if args.near_dedup:
        bands, rows = args.minhash_bands, args.minhash_rows_per_band
        print(
            f"data: near duplicates: MinHash over character {args.shingle_chars}-grams, {bands} bands x {rows} rows: "
            f"pairs above about {lsh_threshold(bands, rows):.2f} similarity are caught "
            f"({candidate_probability(0.8, bands, rows):.0%} of pairs at 0.8, "
            f"{candidate_probability(0.4, bands, rows):.0%} at 0.4), then kept when their whole signatures agree "
            f"on {args.minhash_min_similarity:.0%} or more"
        )
    previous = None
    started = time.perf_counter()
    for number, (name, pipeline, tasks) in enumerate(pipelines, start=1):
        print(
            f"data: [{number}/{len(pipelines)}] {name} ({tasks} tasks, {time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        executor = make_executor(
            options, pipeline, tasks, work / "logs" / f"{number}-{name.replace('/', '-')}", previous
        )
        executor.run()
        previous = executor
    if args.executor == "slurm":
        return {"submitted": [name for name, _, _ in pipelines], "report": str(out / "report.json")}

    # 5. save: the report is written by the last pipeline; the intermediate files go unless kept

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    if not args.keep_work:
        shutil.rmtree(work)

    # 6. summary
    print((out / "report.md").read_text(encoding="utf-8"))
    return {
        "splits": report["splits"],
        "files": report["files"],
        "steps": report["steps"],
        "lsh_threshold": report["settings"]["lsh_threshold"],
        "report": str(out / "report.md"),
    }
