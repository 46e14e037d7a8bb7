"""Run one stage of the pipeline from a recipe: the form for `accelerate launch` (the same as `sccl run`).

    accelerate launch recipes/run.py recipes/sft.yaml [--key value ...]
    python recipes/run.py recipes/demo/tokenizer.yaml --output_dir runs/tok

The recipe's `stage: X` runs src/sccl_hf/stages/X.py.
"""

import sys

from sccl_hf.cli import main

if __name__ == "__main__":
    main(["run", *sys.argv[1:]])
