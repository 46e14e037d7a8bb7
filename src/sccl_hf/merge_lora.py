"""Stage `merge_lora`: merge a LoRA adapter into its base model and save a self-contained model directory."""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from peft import PeftModel

from sccl_hf.configs import parse_recipe
from sccl_hf.model import load_model, load_tokenizer, save_model_dir


@dataclass
class MergeArguments:
    adapter_dir: str = field(default="", metadata={"help": "a LoRA adapter directory (the output of a dpo_lora run)"})
    base_model: str = field(default="", metadata={"help": "the base model directory (default: the adapter's own)"})
    output_dir: str = "runs/merged"

    def __post_init__(self):
        adapter_config = Path(self.adapter_dir) / "adapter_config.json"
        if not adapter_config.is_file():
            raise FileNotFoundError(f"adapter_dir: no adapter_config.json in '{self.adapter_dir}'")
        if not self.base_model:
            self.base_model = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        if not Path(self.base_model).is_dir():
            raise FileNotFoundError(f"base_model: no such model directory: '{self.base_model}'")


RECIPE_ARGUMENTS = (MergeArguments,)


def merge(adapter_dir: str | Path, base_model: str | Path):
    """The base model with the adapter's weights folded in (a plain TextToTextModel, no PEFT wrapper)."""
    return PeftModel.from_pretrained(load_model(base_model), adapter_dir).merge_and_unload()


def main(args: MergeArguments) -> Path:
    model = merge(args.adapter_dir, args.base_model)
    tokenizer = load_tokenizer(args.adapter_dir if (Path(args.adapter_dir) / "tokenizer.json").is_file() else args.base_model)
    out = save_model_dir(model, tokenizer, args.output_dir)
    print(f"merged {args.adapter_dir} into {args.base_model}: {out.resolve()}")
    return out


if __name__ == "__main__":
    main(*parse_recipe(sys.argv[1], sys.argv[2:], RECIPE_ARGUMENTS))
