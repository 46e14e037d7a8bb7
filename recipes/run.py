"""Run one stage of the pipeline from a recipe.

    accelerate launch recipes/run.py recipes/sft.yaml [--key value ...]
    python recipes/run.py recipes/demo/tokenizer.yaml --output_dir runs/tok

The recipe's `stage:` picks the module in src/sccl_hf that runs it (see sccl_hf.stages.STAGES).
"""

import sys

from sccl_hf.stages import run_recipe

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if len(sys.argv) > 1 else 2)
    run_recipe(sys.argv[1], sys.argv[2:])
