"""Stage `demo_data`: write the demo's own small Chinese corpus, generated in code (sccl_hf.demo_corpus).

Reads: nothing. Writes: `pretrain`, `sft`, `held_out` (prompt/response) and `dpo` (prompt/chosen/rejected)
parquet files in `output_dir`.
"""

from dataclasses import dataclass, field


# 1. arguments
@dataclass
class DemoDataArguments:
    output_dir: str = "runs/demo/data"
    seed: int = field(default=0, metadata={"help": "which facts are held out and how rows are shuffled"})


RECIPE_ARGUMENTS = (DemoDataArguments,)


def main(args: DemoDataArguments) -> dict:
    import pyarrow.parquet as pq

    from sccl_hf.demo_corpus import write_corpus

    # 2. inputs and 3. model: none; 4. work and 5. save
    paths = write_corpus(args.output_dir, seed=args.seed)
    # 6. summary
    rows = {split: pq.ParquetFile(path).metadata.num_rows for split, path in paths.items()}
    print(f"demo corpus: {rows} rows in {args.output_dir}")
    return {"rows": rows, "files": {split: str(path) for split, path in paths.items()}}
