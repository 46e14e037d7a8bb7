"""Stage `export_ct2`: convert a model folder for CTranslate2, the fast generation engine (`--engine ct2`).

Reads: a self-contained model folder. Writes: a CTranslate2 folder (`model.bin`, its `config.json` and
vocabulary) with the tokenizer and `sccl_ct2.json` (the source, the quantization, max_seq_len), which chat, serve
and the evaluation stages load as an engine. Quantization: float32 (the same greedy answers as the torch
engine), int8 (smaller and faster on CPU), or the other CTranslate2 types (int8_float32, float16, bfloat16, ...).
"""

from dataclasses import dataclass, field
from pathlib import Path

QUANTIZATIONS = ("float32", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "float16", "bfloat16")


# 1. arguments
@dataclass
class ExportArguments:
    model_dir: str = field(default="", metadata={"help": "the model folder to convert"})
    output_dir: str = field(default="", metadata={"help": "the CTranslate2 folder to write"})
    quantization: str = field(default="int8", metadata={"help": f"one of {', '.join(QUANTIZATIONS)}"})

    def __post_init__(self):
        if not self.model_dir or not (Path(self.model_dir) / "config.json").is_file():
            raise FileNotFoundError(f"model_dir: no model folder (config.json) at '{self.model_dir}'")
        if not self.output_dir:
            raise ValueError("output_dir: where to write the CTranslate2 folder")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization: one of {', '.join(QUANTIZATIONS)}, got '{self.quantization}'")


RECIPE_ARGUMENTS = (ExportArguments,)


def main(args: ExportArguments) -> dict:
    from sccl_hf.ct2 import convert_to_ct2

    # 2-5. inputs, conversion, save: one library call (`sccl serve --engine ct2` converts plain folders with it too)
    info = convert_to_ct2(args.model_dir, args.output_dir, args.quantization)
    # 6. summary
    print(f"export_ct2: {args.model_dir} -> {args.output_dir} ({args.quantization}, model.bin "
          f"{info['model_bin_bytes'] / 1e6:.1f} MB)")  # fmt: skip
    return info
