"""What a model folder holds, checked without loading anything heavy."""

from pathlib import Path


def finished_model(folder: Path) -> bool:
    """A folder that holds a finished model (or LoRA adapter), as a stage's final save leaves it."""
    folder = Path(folder)
    has_weights = (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))
    return has_weights or (folder / "adapter_config.json").is_file()


def existing_model_folder(text: str) -> str:
    """An argparse type for `--model`: refused at once, before anything loads, when there is no such folder."""
    import argparse

    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"no such model folder: '{text}'")
    return text
