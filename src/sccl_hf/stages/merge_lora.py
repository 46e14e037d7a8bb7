"""Stage `merge_lora`: merge a LoRA adapter into its base model and save a self-contained model directory.

Reads: a LoRA adapter directory (the output of a `dpo` run with `use_lora: true`) and its base model directory.
Writes: a model directory with the adapter's weights folded in.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path


# 1. arguments
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
    from peft import PeftModel

    from sccl_hf.model import load_model

    return PeftModel.from_pretrained(load_model(base_model), adapter_dir).merge_and_unload()


def main(args: MergeArguments) -> dict:
    from sccl_hf.model import count_parameters, load_tokenizer, save_model_dir

    # 2. inputs: the tokenizer saved with the adapter (else the base model's)
    has_tokenizer = (Path(args.adapter_dir) / "tokenizer.json").is_file()
    tokenizer = load_tokenizer(args.adapter_dir if has_tokenizer else args.base_model)
    # 3. model and 4. work
    model = merge(args.adapter_dir, args.base_model)
    # 5. save
    out = save_model_dir(model, tokenizer, args.output_dir)
    # 6. summary
    print(f"merged {args.adapter_dir} into {args.base_model}: {out.resolve()}")
    return {"adapter_dir": args.adapter_dir, "base_model": args.base_model, "parameters": count_parameters(model)}
