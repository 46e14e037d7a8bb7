"""Recipes: a YAML file plus ``--key value`` overrides into the dataclasses a stage declares.

A recipe is checked twice. First, fast and with nothing heavy imported (no torch, transformers or TRL): every
key must be a field of one of the stage's argument classes (an unknown key is an error, with a close match
suggested), every value must fit its field's type, a null is refused where the field does not take one, a key
given twice is refused, and the project's own argument dataclasses are built, so a missing input file is reported
too. The classes of other libraries (``Seq2SeqTrainingArguments``, TRL's ``DPOConfig``) are named as
``"module:Class"`` strings and read from their source for this check, not imported. Then the stage's classes are
imported and ``HfArgumentParser`` builds the instances the stage runs with.
"""

import ast
import dataclasses
import difflib
import enum
import glob
import importlib
import importlib.util
import json
import re
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from sccl_hf.errors import RecipeError


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML whose mappings refuse a key given twice (plain YAML keeps the last one, silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key '{key}' is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_recipe(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe not found: {path}")
    try:
        recipe = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(recipe, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of key: value, got {type(recipe).__name__}")
    if "stage" not in recipe:
        raise RecipeError(f"{path}: missing 'stage:' (the module in src/sccl_hf/stages/ that runs it)")
    return recipe


# -- argument classes -------------------------------------------------------------------------------------------


def load_argument_class(spec) -> type:
    """A dataclass, given as itself or as "module:Class" (imported now: this is the heavy step)."""
    if isinstance(spec, str):
        module, name = spec.split(":")
        return getattr(importlib.import_module(module), name)
    return spec


def _annotation_text(annotation) -> str:
    """ "int", "str | None", "Optional[str]": the annotation as the source writes it."""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    return re.sub(r"\b(typing|builtins)\.", "", text)


@cache
def _source_fields(spec: str) -> dict[str, str]:
    """{field: annotation} of "module:Class" and its dataclass bases, read from the source without importing it."""
    module_name, class_name = spec.split(":")
    tree = ast.parse(_module_source(module_name).read_text(encoding="utf-8"))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    imported = {}  # name -> module it comes from, for bases defined elsewhere
    guarded = [n for t in tree.body if isinstance(t, ast.Try) for n in t.body]  # `try: from x import Base`
    for node in [*tree.body, *guarded]:
        if isinstance(node, ast.ImportFrom):
            base = module_name.rsplit(".", node.level)[0] if node.level else ""
            source = ".".join(filter(None, [base, node.module]))
            for alias in node.names:
                imported[alias.asname or alias.name] = source
    fields = {}
    for base in classes[class_name].bases:
        if isinstance(base, ast.Name) and base.id in classes:
            fields.update(_source_fields(f"{module_name}:{base.id}"))
        elif isinstance(base, ast.Name) and base.id in imported:
            fields.update(_source_fields(f"{_defining_module(imported[base.id], base.id)}:{base.id}"))
    for node in classes[class_name].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and not _init_false(node):
            fields[node.target.id] = ast.unparse(node.annotation)
    return fields


def _module_source(module_name: str) -> Path:
    """The source file of a module, found without importing it or its package (`find_spec("a.b")` would
    import `a`, which for transformers takes seconds)."""
    top, *rest = module_name.split(".")
    spec = importlib.util.find_spec(top)
    if not rest:
        return Path(spec.origin)
    folder = Path(next(iter(spec.submodule_search_locations))).joinpath(*rest)
    return folder / "__init__.py" if folder.is_dir() else folder.with_suffix(".py")


def _defining_module(module_name: str, name: str) -> str:
    """Where `name`, imported from `module_name`, is defined (follows a package's re-export to its module)."""
    tree = ast.parse(_module_source(module_name).read_text(encoding="utf-8"))
    if any(isinstance(n, ast.ClassDef) and n.name == name for n in tree.body):
        return module_name
    for node in ast.walk(tree):  # transformers' and TRL's lazy __init__: {"training_args": ["TrainingArguments"]}
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and isinstance(value, ast.List):
                    if any(isinstance(e, ast.Constant) and e.value == name for e in value.elts):
                        return f"{module_name}.{key.value}"
        if isinstance(node, ast.ImportFrom) and any(a.name == name for a in node.names) and node.level:
            return f"{module_name}.{node.module}"
    raise LookupError(f"cannot find where {name} is defined in {module_name}")


def _init_false(node: ast.AnnAssign) -> bool:
    call = node.value
    return isinstance(call, ast.Call) and any(
        k.arg == "init" and isinstance(k.value, ast.Constant) and k.value.value is False for k in call.keywords
    )


def recipe_fields(specs: tuple) -> dict[str, str]:
    """{field: annotation text} over all of a stage's argument classes."""
    fields = {}
    for spec in specs:
        if isinstance(spec, str):
            fields.update(_source_fields(spec))
        else:
            # The class's annotations, not `Field.type`: HfArgumentParser rewrites the latter in place
            # (`str | None` becomes `str`), which would refuse nulls in a second recipe of the same process.
            hints = typing.get_type_hints(spec)
            fields.update({f.name: _annotation_text(hints[f.name]) for f in dataclasses.fields(spec) if f.init})
    return fields


# -- values -----------------------------------------------------------------------------------------------------

_TRUE, _FALSE = {"true", "yes", "1"}, {"false", "no", "0"}
_NONE = {"None", "NoneType", "Any"}


def _union_parts(annotation: str) -> list[str]:
    """The top-level members of a type annotation: "int | None" and "Optional[int]" -> ["int", "None"]."""
    text = annotation.strip()
    for wrapper, extra in (("Optional[", ["None"]), ("Union[", [])):
        if text.startswith(wrapper) and text.endswith("]"):
            return [p for part in _split_top(text[len(wrapper) : -1], ",") for p in _union_parts(part)] + extra
    return [part.strip() for part in _split_top(text, "|")]


def _split_top(text: str, separator: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "["
        depth -= char == "]"
        if char == separator and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _coerce(key: str, value, annotation: str):
    """`value` (from YAML, or a command-line word) converted to `annotation`'s type, or RecipeError."""
    parts = _union_parts(annotation)
    heads = {part.split("[")[0].strip() for part in parts}
    if value is None:
        if heads & _NONE:
            return None
        raise RecipeError(f"{key}: null is not allowed (expects {annotation})")
    list_part = next((p for p in parts if p.startswith("list")), None)
    inner = list_part[5:-1] if list_part and list_part.endswith("]") else "str"
    if isinstance(value, list):
        if list_part is None:
            raise RecipeError(f"{key}: expects a single value ({annotation}), got a list")
        return [_coerce(key, item, inner) for item in value]
    if list_part is not None and not heads - {"list", "None", "NoneType"}:
        return [_coerce(key, value, inner)]  # a single value for a list field
    takes_str = bool(heads - {"int", "float", "bool", "list", "dict", "None", "NoneType"})  # str, an enum, Any, ...
    if isinstance(value, dict):
        if heads & {"dict", "Any"}:
            return value
        raise RecipeError(f"{key}: expects {annotation}, got a mapping")
    if isinstance(value, bool):
        if "bool" in heads or takes_str:
            return value
        raise RecipeError(f"{key}: expects {annotation}, got {str(value).lower()}")
    if isinstance(value, (int, float)):
        if "float" in heads or (isinstance(value, int) and "int" in heads):
            return value
        if takes_str:
            return str(value)
        raise RecipeError(f"{key}: invalid {annotation} value: {value!r}")
    text = str(value)
    if "bool" in heads and text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    if "int" in heads and re.fullmatch(r"[+-]?\d+", text.strip()):
        return int(text)
    if "float" in heads:
        try:
            return float(text)
        except ValueError:
            pass
    if takes_str or "dict" in heads:
        return text
    kind = next((k for k in ("int", "float", "bool") if k in heads), annotation)
    raise RecipeError(f"{key}: invalid {kind} value: '{text}'")


def _at_least(low):
    return lambda v: v >= low, f"{low} or more"


# Limits that types cannot say, for whichever of a stage's classes has the field (None is left to the type check).
VALUE_LIMITS = {
    "max_steps": (lambda v: v == -1 or v > 0, "a positive number of steps, or -1 to train by epochs"),
    "num_train_epochs": (lambda v: v > 0, "above 0"),
    "learning_rate": _at_least(0),
    "warmup_steps": _at_least(0),
    "weight_decay": _at_least(0),
    "beta": (lambda v: v > 0, "above 0"),
    **{
        key: _at_least(1)
        for key in (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
            "save_steps",
            "eval_steps",
            "save_total_limit",
            "max_seq_len",
            "buffer_size",
            "max_tokens_per_batch",
            "batch_size",
            "vocab_size",
            "lora_r",
            "lora_alpha",
            "max_piece_chars",
            "batch_rows",
            "shingle_chars",
            "minhash_bands",
            "minhash_rows_per_band",
            "output_shards",
            "row_group_rows",
        )
    },
    **{
        key: _at_least(0)
        for key in ("max_new_tokens", "max_rows", "max_chars", "num_proc", "dataloader_num_workers", "workers", "tasks")
    },
    "min_cjk_ratio": (lambda v: 0 <= v <= 1, "between 0 and 1"),
    "minhash_min_similarity": (lambda v: 0 <= v <= 1, "between 0 and 1"),
}


def _check_limits(values: dict) -> None:
    for key, value in values.items():
        if key in VALUE_LIMITS and isinstance(value, (int, float)) and not isinstance(value, bool):
            holds, wanted = VALUE_LIMITS[key]
            if not holds(value):
                raise RecipeError(f"{key}: {value} is out of range (expects {wanted})")


def split_overrides(overrides: list[str]) -> dict:
    """`--key value [value ...]` and `--key=value` words into {key: value or [values]}."""
    values: dict = {}
    key = None
    for word in overrides:
        if word.startswith("--") and len(word) > 2:
            key, _, inline = word[2:].partition("=")
            values[key] = [inline] if inline else []
        elif key is None:
            raise RecipeError(f"command line: '{word}' is not a --key (overrides are --key value)")
        else:
            values[key].append(word)
    for key, words in values.items():
        if not words:
            raise RecipeError(f"command line: --{key} needs a value")
        values[key] = words[0] if len(words) == 1 else words
    return values


def check_recipe(path: str | Path, overrides: list[str], specs: tuple, recipe: dict | None = None) -> dict:
    """The fast check (nothing heavy imported): keys, value types, nulls and the project's own dataclasses
    (which check their input files). Returns the merged {key: value} of the recipe and its overrides, each value
    converted to its field's type. `recipe`: the file's contents when the caller has read it already."""
    recipe = dict(read_recipe(path) if recipe is None else recipe)
    recipe.pop("stage")
    known = recipe_fields(specs)
    given = split_overrides(overrides)
    for source, keys in ((str(path), recipe), ("command line", given)):
        for key in keys:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise RecipeError(f"{source}: unknown key '{key}'{hint}")
    merged = {**recipe, **given}
    try:
        values = {key: _coerce(key, value, known[key]) for key, value in merged.items()}
        _check_limits(values)
    except RecipeError as error:
        raise RecipeError(f"{path}: {error}") from None
    for spec in specs:
        if not isinstance(spec, str):
            own = {f.name for f in dataclasses.fields(spec) if f.init}
            try:
                spec(**{k: v for k, v in values.items() if k in own})
            except (ValueError, TypeError, FileNotFoundError) as error:  # raised by the dataclass's __post_init__
                raise RecipeError(f"{path}: {error}") from error
    return values


def _structured(value) -> bool:
    """A mapping, or a list holding one (the `data` stage's `sources:`): values with no command-line form."""
    return isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, dict) for v in value))


# -- the full parse ---------------------------------------------------------------------------------------------


class _RecipeArgumentParser:
    """HfArgumentParser whose errors are exceptions naming the recipe, not usage text and an exit."""

    def __new__(cls, dataclass_types, source: str):
        from transformers import HfArgumentParser

        class Parser(HfArgumentParser):
            def error(self, message):
                raise RecipeError(f"{source}: {message}")

        return Parser(dataclass_types)


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


def parse_recipe(path: str | Path, overrides: list[str], specs: tuple, recipe: dict | None = None) -> tuple:
    """Check the recipe (fast), then build instances of the stage's argument classes with HfArgumentParser.
    Overrides win over the YAML. `recipe`: the file's contents when the caller has read it already."""
    recipe = dict(read_recipe(path) if recipe is None else recipe)
    values = check_recipe(path, overrides, specs, recipe)
    recipe.pop("stage")
    override_keys = list(split_overrides(overrides))
    dataclass_types = tuple(load_argument_class(spec) for spec in specs)
    if any(_structured(v) for v in values.values()) and all(dataclasses.is_dataclass(t) for t in dataclass_types):
        # Lists of mappings cannot pass through argparse: HfArgumentParser builds the dataclasses from the checked
        # values directly (an unknown key is still an error: allow_extra_keys stays False).
        try:
            return tuple(_RecipeArgumentParser(dataclass_types, str(path)).parse_dict(values))
        except (ValueError, TypeError, FileNotFoundError) as error:
            raise RecipeError(f"{path}: {error}") from error
    argv, set_after = _as_argv(recipe)
    parser = _RecipeArgumentParser(dataclass_types, str(path))
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


def resolved_recipe(path: str | Path, overrides: list[str], instances: tuple, recipe: dict | None = None) -> dict:
    """The recipe as it ran: `stage:` and every key of the recipe or its overrides, with the parsed value."""
    recipe = read_recipe(path) if recipe is None else recipe
    keys = [k for k in recipe if k != "stage"] + [k for k in split_overrides(overrides) if k not in recipe]
    resolved = {"stage": recipe["stage"]}
    for key in keys:
        value = next(getattr(i, key) for i in instances if hasattr(i, key))
        resolved[key] = _plain(value)
    return resolved


def _plain(value):
    """A YAML-friendly copy of a parsed value (enums by value, paths as strings)."""
    if isinstance(value, enum.Enum):  # before str: transformers' enums are str subclasses
        return _plain(value.value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# -- input files and the shared argument dataclasses -----------------------------------------------------------


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
        elif path.is_dir():  # hidden folders and files (.git, .ipynb_checkpoints) are never data
            matches = sorted(
                p
                for p in path.rglob("*")
                if p.suffix in suffixes and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not matches:
                raise FileNotFoundError(f"{key}: the directory '{pattern}' holds no {'/'.join(suffixes)} file")
            files += matches
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{key}: no such file or directory: '{pattern}'")
    return files


def required_files(patterns: list[str], key: str, suffixes=(".parquet", ".jsonl", ".json")) -> list[Path]:
    """`resolve_files` for a key that must name at least one file."""
    if not patterns:
        kinds = "/".join(suffix.lstrip(".") for suffix in suffixes)
        raise ValueError(f"{key}: give at least one {kinds} file, directory or glob")
    return resolve_files(patterns, key, suffixes)


@dataclass
class RunArguments:
    """Keys every stage takes (the runner adds them; the stage's own `main` never sees them)."""

    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "replace a finished model already in the output folder"}
    )


@dataclass
class DataFiles:
    """Training and evaluation files: lists of files, directories or globs, resolved (or refused) at parse time."""

    train_files: list[str] = field(
        default_factory=list,
        metadata={"help": "parquet/jsonl files (pretrain, sft: .txt documents too), directories or globs"},
    )
    eval_files: list[str] = field(default_factory=list, metadata={"help": "held-out files for evaluation"})
    file_suffixes = (".parquet", ".jsonl", ".json")  # a class attribute, not a recipe key

    def __post_init__(self):
        self.train_paths = required_files(self.train_files, "train_files", self.file_suffixes)
        self.eval_paths = resolve_files(self.eval_files, "eval_files", self.file_suffixes)


@dataclass
class DataArguments(DataFiles):
    """Where the prompt/response tables are and how to read them. Plain `.txt` files are documents, as the data
    stage's `text` format reads them (blank-line separated, the first line the title, the rest the body): title ->
    body pairs, or one text each for span corruption (`tables.load_table`)."""

    file_suffixes = (".parquet", ".jsonl", ".json", ".txt")

    prompt_column: str = "prompt"
    response_column: str = "response"
    max_seq_len: int | None = field(
        default=None,
        metadata={"help": "truncate prompts and responses to this many tokens (default: the model's max_seq_len)"},
    )
    streaming: bool = field(default=False, metadata={"help": "stream with `datasets` (GB-scale data); needs max_steps"})
    buffer_size: int = field(
        default=10_000, metadata={"help": "rows shuffled together (one window) when streaming, and grouped by length"}
    )
    max_tokens_per_batch: int | None = field(
        default=None,
        metadata={
            "help": "streaming: a token budget per batch, in computed positions (rows x (longest prompt + longest "
            "response)); batches then hold at most per_device_train_batch_size rows and fewer when rows are long"
        },
    )
    reconstruction_share: float = field(
        default=0.0,
        metadata={
            "help": "this share of the training rows becomes reconstruction rows: the response with 15% of its "
            "tokens masked in spans as the prompt, the whole response as the target (teaches reading the input)"
        },
    )

    objective: str = field(
        default="text_to_text",
        metadata={
            "help": "text_to_text (prompt -> response), span_corruption (T5's: each row's text, spans hidden behind "
            "sentinels -> the spans) or mixed (span_corruption_share of the rows corrupted, the rest pairs)"
        },
    )
    span_corruption_share: float = field(default=0.5, metadata={"help": "mixed: the share of rows corrupted"})
    noise_density: float = field(default=0.15, metadata={"help": "span corruption: share of tokens hidden (T5: 0.15)"})
    mean_span_length: float = field(default=3.0, metadata={"help": "span corruption: mean span length (T5: 3)"})

    def __post_init__(self):
        super().__post_init__()
        if self.objective not in ("text_to_text", "span_corruption", "mixed"):
            raise ValueError(f"objective: must be text_to_text, span_corruption or mixed, got '{self.objective}'")
        if not 0.0 < self.span_corruption_share < 1.0:
            raise ValueError(f"span_corruption_share: {self.span_corruption_share} is out of range (0 to 1, both out)")
        if not 0.0 < self.noise_density < 0.5:
            raise ValueError(f"noise_density: {self.noise_density} is out of range (0 to 0.5)")
        if self.mean_span_length < 1:
            raise ValueError(f"mean_span_length: {self.mean_span_length} is below 1")
        if not 0.0 <= self.reconstruction_share <= 1.0:
            raise ValueError(f"reconstruction_share: {self.reconstruction_share} is out of range (0 to 1)")
        if self.max_tokens_per_batch is not None:
            if not self.streaming:
                raise ValueError(
                    "max_tokens_per_batch needs streaming: true (batches of varying size are cut from the stream's "
                    "windows; an in-memory table goes through the Trainer's fixed-size batches)"
                )


@dataclass
class ModelArguments:
    """Which model to start from (or which preset to build) and which parts to train."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "a saved model directory to start from (SFT, DPO); empty: build `preset`"}
    )
    preset: str = field(
        default="tiny", metadata={"help": "size preset when building a new model: tiny, small, chatlm-0.2b"}
    )
    tokenizer_dir: str | None = field(default=None, metadata={"help": "tokenizer directory (default: the model's)"})
    dropout_rate: float = 0.1
    freeze_embeddings_and_encoder: bool = field(
        default=False, metadata={"help": "train only the decoder (ChatLM-mini-Chinese's SFT default)"}
    )
    save_each_epoch: bool = field(
        default=False,
        metadata={"help": "also save a self-contained model as output_dir/epoch-N after each epoch (ChatLM made its "
                  "DPO rejected answers with the SFT model after one epoch)"},
    )  # fmt: skip
    start_near_parent_loss: bool = field(
        default=True,
        metadata={"help": "the first logged loss is checked against the saved model's final loss; false when that "
                  "model was trained on another task (a copy warm-up, a span corruption pretraining): then against a new model's, "
                  "ln(vocabulary size) + 1"},
    )  # fmt: skip

    def __post_init__(self):
        from sccl_hf.model_folder import model_reference_problem

        for key in ("model_name_or_path", "tokenizer_dir"):
            value = getattr(self, key)
            if value and (problem := model_reference_problem(value, key)):
                raise FileNotFoundError(problem)
        if not self.model_name_or_path and not self.tokenizer_dir:
            raise ValueError("give model_name_or_path (a saved model) or tokenizer_dir (to build a new model)")


@dataclass
class EvalTableArguments:
    """A model and a prompt/response table to evaluate it on: the keys eval_gen, eval_ppl and eval_ie share."""

    model_name_or_path: str = field(default="", metadata={"help": "the model directory (or hub id) to evaluate"})
    eval_files: list[str] = field(default_factory=list, metadata={"help": "prompt/response parquet or jsonl"})
    output_dir: str = "runs/eval"
    batch_size: int = 32
    max_rows: int = field(default=0, metadata={"help": "score only the first rows (0: all)"})
    device: str = field(default="auto", metadata={"help": "auto (GPU when present), cpu, cuda, ..."})

    def __post_init__(self):
        from sccl_hf.model_folder import model_reference_problem

        if problem := model_reference_problem(self.model_name_or_path, "model_name_or_path"):
            raise FileNotFoundError(problem)
        self.eval_paths = required_files(self.eval_files, "eval_files")


@dataclass
class GenerationTableArguments(EvalTableArguments):
    """An evaluation that generates an answer to each prompt of the table (eval_gen, eval_ie)."""

    search_type: str = field(default="greedy", metadata={"help": "greedy, beam, sampling or contrastive"})
    max_new_tokens: int = 0
    engine: str = field(default="torch", metadata={"help": "torch, or ct2 (model_name_or_path from export_ct2)"})
    stop: list[str] = field(
        default_factory=list, metadata={"help": "end an answer at the first of these strings, kept (eval_ie: ')]')"}
    )
