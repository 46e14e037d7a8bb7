"""`sccl run RECIPE --accelerate_config NAME [--num_processes N] [--main_process_port P]`: launch a recipe through `accelerate launch` with
one of the presets in `configs/accelerate/` (as TRL's CLI does with its own), instead of writing the launcher
command by hand. Presets: single_device, multi_gpu, cpu_two_processes, deepspeed_zero2, deepspeed_zero2_offload,
deepspeed_zero3, deepspeed_zero3_offload, fsdp.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from sccl_hf.errors import RecipeError


def configs_root() -> Path:
    """configs/ of the checkout, or the copy shipped inside the package (a link to it in a checkout)."""
    return Path(__file__).resolve().parent / "config_files"


def preset_names() -> list[str]:
    return sorted(p.stem for p in (configs_root() / "accelerate").glob("*.yaml"))


def resolved_preset(name: str, numbers: dict | None = None) -> dict:
    """A preset as accelerate reads it, with its DeepSpeed file made an absolute path (presets name it relative
    to themselves, so they work from any folder and from an installed package)."""
    path = Path(name) if name.endswith(".yaml") else configs_root() / "accelerate" / f"{name}.yaml"
    if not path.is_file():
        raise RecipeError(f"--accelerate_config: no preset '{name}'; presets are {', '.join(preset_names())}")
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    deepspeed = config.get("deepspeed_config") or {}
    if deepspeed.get("deepspeed_config_file"):
        file = (path.parent / deepspeed["deepspeed_config_file"]).resolve()
        if not file.is_file():
            raise RecipeError(f"{path}: deepspeed_config_file '{file}' does not exist")
        deepspeed["deepspeed_config_file"] = str(file)
    config.update(numbers or {})
    return config


LAUNCHER_NUMBERS = ("num_processes", "main_process_port")  # launcher options that go with --accelerate_config


def split_launcher_options(overrides: list[str]) -> tuple[str | None, dict, list[str]]:
    """(`--accelerate_config` value, {num_processes, main_process_port given}, the recipe's own overrides)."""
    preset, numbers, rest, words = None, {}, [], iter(overrides)
    for word in words:
        key, _, inline = word.partition("=")
        if key in ("--accelerate_config", *(f"--{n}" for n in LAUNCHER_NUMBERS)):
            value = inline or next(words, None)
            if not value:
                raise RecipeError(f"command line: {key} needs a value")
            if key == "--accelerate_config":
                preset = value
            elif not value.isdigit() or int(value) < 1:
                raise RecipeError(f"command line: {key} must be a positive number, got '{value}'")
            else:
                numbers[key[2:]] = int(value)
        else:
            rest.append(word)
    if numbers and not preset:
        raise RecipeError(f"command line: --{next(iter(numbers))} goes with --accelerate_config NAME")
    return preset, numbers, rest


def launch(recipe: str, overrides: list[str], preset: str, numbers: dict | None = None) -> int:
    """Run `accelerate launch --config_file PRESET -m sccl_hf.cli run RECIPE OVERRIDES`; its exit status."""
    config = resolved_preset(preset, numbers)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="sccl-accelerate-", delete=False) as f:
        yaml.safe_dump(config, f)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", f.name,
               "-m", "sccl_hf.cli", "run", str(recipe), *overrides]  # fmt: skip
    print(f"launch: {preset} ({config.get('num_processes', 1)} processes): {' '.join(command)}", flush=True)
    try:
        return subprocess.call(command)
    finally:
        Path(f.name).unlink(missing_ok=True)
