"""Recipe parsing: a YAML file plus ``--key value`` overrides into the dataclasses a stage declares.

Every YAML value goes through ``HfArgumentParser``'s argparse types, so a wrong type is an error that names
the key, and an unknown key is an error (with a close match suggested), both raised before a model exists.
"""

import dataclasses
import difflib
import glob
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser


class RecipeError(ValueError):
    """A recipe (or its overrides) is wrong; the message names the file and the key."""


def read_recipe(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}")
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(recipe, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of key: value, got {type(recipe).__name__}")
    if "stage" not in recipe:
        raise RecipeError(f"{path}: missing 'stage:' (one of tokenizer, pretrain, sft, dpo, merge_lora, dpo_data)")
    return recipe


class _RecipeArgumentParser(HfArgumentParser):
    """argparse prints usage and exits on a bad value; a recipe error should be an exception naming its source."""

    source = "recipe"

    def error(self, message):
        raise RecipeError(f"{self.source}: {message}")


def _as_argv(recipe: dict) -> tuple[list[str], dict]:
    """YAML values as command-line words, so argparse converts and checks every one of them. Nulls and empty
    lists have no command-line form: they are returned apart and set after parsing."""
    argv, set_after = [], {}
    for key, value in recipe.items():
        if value is None or value == []:
            set_after[key] = value
        elif isinstance(value, bool):
            argv += [f"--{key}", str(value).lower()]
        elif isinstance(value, list):
            argv += [f"--{key}", *[json.dumps(v) if isinstance(v, (dict, list)) else str(v) for v in value]]
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        else:
            argv += [f"--{key}", str(value)]
    return argv, set_after


def _device_defaults(dataclass_types: tuple) -> list[str]:
    """`use_cpu: true` when this machine has no GPU. Without it, transformers 5 sets up each process of a
    multi-process CPU run (accelerate launch --multi_gpu) as process 0 of 1: every process would write the logs,
    checkpoints and final model. A recipe or override that sets use_cpu wins."""
    import torch
    from transformers import TrainingArguments

    if any(issubclass(t, TrainingArguments) for t in dataclass_types) and not torch.cuda.is_available():
        return ["--use_cpu", "true"]
    return []


def parse_recipe(path: str | Path, overrides: list[str], dataclass_types: tuple) -> tuple:
    """Parse ``path`` (YAML with a ``stage:`` key) and ``overrides`` (``--key value`` words) into instances
    of ``dataclass_types``. Overrides win over the YAML."""
    recipe = read_recipe(path)
    recipe.pop("stage")
    known = {f.name for t in dataclass_types for f in dataclasses.fields(t) if f.init}
    override_keys = [w[2:].split("=", 1)[0] for w in overrides if w.startswith("--")]
    for source, keys in ((str(path), recipe), ("command line", override_keys)):
        for key in keys:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise RecipeError(f"{source}: unknown key '{key}'{hint}")
    argv, set_after = _as_argv(recipe)
    parser = _RecipeArgumentParser(dataclass_types)
    parser.source = f"{path}"
    try:
        parsed = parser.parse_args_into_dataclasses(args=_device_defaults(dataclass_types) + argv + list(overrides))
    except RecipeError:
        raise
    except (ValueError, TypeError, FileNotFoundError) as error:  # raised by a dataclass's __post_init__
        raise RecipeError(f"{path}: {error}") from error
    for key, value in set_after.items():
        if key in override_keys:
            continue
        for instance in parsed:
            if key in {f.name for f in dataclasses.fields(instance)}:
                setattr(instance, key, value)
    return tuple(parsed)


def resolve_files(patterns: list[str], key: str, suffixes=(".parquet", ".jsonl", ".json")) -> list[Path]:
    """Expand a list of files, directories and globs into data files, or raise naming what is missing."""
    files = []
    for pattern in patterns:
        path = Path(pattern)
        if any(ch in pattern for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).suffix in suffixes)
            if not matches:
                raise FileNotFoundError(f"{key}: the pattern '{pattern}' matches no {'/'.join(suffixes)} file")
            files += matches
        elif path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.suffix in suffixes)
            if not matches:
                raise FileNotFoundError(f"{key}: the directory '{pattern}' holds no {'/'.join(suffixes)} file")
            files += matches
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{key}: no such file or directory: '{pattern}'")
    return files


@dataclass
class DataFiles:
    """Training and evaluation files: lists of files, directories or globs, resolved (or refused) at parse time."""

    train_files: list[str] = field(default_factory=list, metadata={"help": "parquet/jsonl files, directories or globs"})
    eval_files: list[str] = field(default_factory=list, metadata={"help": "held-out files for evaluation"})

    def __post_init__(self):
        if not self.train_files:
            raise ValueError("train_files: give at least one parquet/jsonl file, directory or glob")
        self.train_paths = resolve_files(self.train_files, "train_files")
        self.eval_paths = resolve_files(self.eval_files, "eval_files") if self.eval_files else []


@dataclass
class DataArguments(DataFiles):
    """Where the prompt/response tables are and how to read them."""

    prompt_column: str = "prompt"
    response_column: str = "response"
    max_seq_len: int = field(default=256, metadata={"help": "truncate prompts and responses to this many tokens"})
    streaming: bool = field(default=False, metadata={"help": "stream with `datasets` (GB-scale data); needs max_steps"})
    buffer_size: int = field(default=10_000, metadata={"help": "shuffle buffer, in rows, when streaming"})


@dataclass
class ModelArguments:
    """Which model to start from (or which preset to build) and which parts to train."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "a saved model directory to start from (SFT, DPO); empty: build `preset`"}
    )
    preset: str = field(default="tiny", metadata={"help": "size preset when building a new model: tiny, small, chatlm-0.2b"})
    tokenizer_dir: str | None = field(default=None, metadata={"help": "tokenizer directory (default: the model's)"})
    dropout_rate: float = 0.1
    freeze_embeddings_and_encoder: bool = field(
        default=False, metadata={"help": "train only the decoder (ChatLM-mini-Chinese's SFT default)"}
    )

    def __post_init__(self):
        for key in ("model_name_or_path", "tokenizer_dir"):
            value = getattr(self, key)
            if value and not Path(value).is_dir():
                raise FileNotFoundError(f"{key}: no such directory: '{value}'")
        if not self.model_name_or_path and not self.tokenizer_dir:
            raise ValueError("give model_name_or_path (a saved model) or tokenizer_dir (to build a new model)")
