"""The stages a recipe can name, each run by one module of this package."""

import importlib
import sys

from sccl_hf.configs import RecipeError, parse_recipe, read_recipe

# stage name -> module in sccl_hf with RECIPE_ARGUMENTS and main(*args)
STAGES = {
    "tokenizer": "train_tokenizer",
    "pretrain": "pretrain",
    "sft": "sft",
    "dpo": "dpo",
    "merge_lora": "merge_lora",
    "dpo_data": "dpo_data",
}


def run_recipe(recipe_path: str, overrides: list[str]):
    try:
        stage = read_recipe(recipe_path)["stage"]
        if stage not in STAGES:
            raise RecipeError(f"{recipe_path}: unknown stage '{stage}'; stages are {', '.join(STAGES)}")
        module = importlib.import_module(f"sccl_hf.{STAGES[stage]}")
        args = parse_recipe(recipe_path, overrides, module.RECIPE_ARGUMENTS)
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    return module.main(*args)
