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
    import json
    import tempfile
    import time

    from ctranslate2.converters import TransformersConverter

    from sccl_hf.engine import CT2_MARKER
    from sccl_hf.model import DEFAULT_MAX_SEQ_LEN, load_tokenizer
    from sccl_hf.tokenization import save_tokenizer

    source, output = Path(args.model_dir), Path(args.output_dir)
    # 2. inputs: the folder seen as a plain T5 model. CTranslate2's converter picks its loader by config class,
    # and ours (TextToTextModelConfig, remote code) has the same weights and names as T5ForConditionalGeneration.
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    max_seq_len = config.get("max_seq_len") or DEFAULT_MAX_SEQ_LEN
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sccl-ct2-") as plain:
        for path in source.iterdir():
            if path.is_file() and path.name != "config.json":
                (Path(plain) / path.name).symlink_to(path.resolve())
        config.pop("auto_map", None)
        config.update(architectures=["T5ForConditionalGeneration"], model_type="t5")
        (Path(plain) / "config.json").write_text(json.dumps(config), encoding="utf-8")
        # 3-4. convert
        quantization = None if args.quantization == "float32" else args.quantization
        TransformersConverter(plain).convert(str(output), quantization=quantization, force=True)
    # 5. save: the tokenizer (prompts are encoded and answers decoded with it) and what the engine needs
    save_tokenizer(load_tokenizer(source), output)
    info = {"source": str(source), "quantization": args.quantization, "max_seq_len": max_seq_len}
    (output / CT2_MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    # 6. summary
    size = (output / "model.bin").stat().st_size
    print(f"export_ct2: {source} -> {output} ({args.quantization}, model.bin {size / 1e6:.1f} MB)")
    return {**info, "model_bin_bytes": size, "seconds": round(time.perf_counter() - started, 2)}
