"""The stages a recipe can name: `stage: X` runs the module `sccl_hf/stages/X.py`.

Every stage module has the same sections, in the same order: arguments (`RECIPE_ARGUMENTS`: the project's
dataclasses, and other libraries' classes as "module:Class" strings), then one `main(*arguments) -> dict` whose
body is inputs, model, work, save, summary. Heavy libraries are imported inside `main`, so a recipe is checked
(and `--help` answers) before any of them loads. `main` returns the stage's results; the runner writes them to
`results.json`, and the resolved recipe to `recipe.yaml`, beside the stage's output.
"""

import importlib
import json
import os
import pkgutil
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import yaml

from sccl_hf.errors import RecipeError, SCCLError
from sccl_hf.model_folder import finished_model
from sccl_hf.recipes import RunArguments, parse_recipe, read_recipe, recipe_fields, resolved_recipe

PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "tokenizers", "sccl-hf")


def stage_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def import_stage(stage: str, source: str = "recipe"):
    if stage not in stage_names():
        raise RecipeError(f"{source}: unknown stage '{stage}'; stages are {', '.join(stage_names())}")
    return importlib.import_module(f"{__name__}.{stage}")


def argument_specs(module) -> tuple:
    """A stage's argument classes, plus the keys every stage takes (RunArguments, handled by the runner)."""
    return (*module.RECIPE_ARGUMENTS, RunArguments)


def find_recipe(path: str | Path) -> Path:
    """A recipe file: the path as given, or else the recipe of that name shipped with the package (so that
    `sccl run recipes/demo/tokenizer.yaml` works from an installed wheel too)."""
    path = Path(path)
    if path.is_file():
        return path
    shipped = Path(__file__).resolve().parents[1] / "recipe_files"  # a link to the top-level recipes/
    relative = Path(*path.parts[1:]) if path.parts and path.parts[0] == "recipes" else path
    return shipped / relative if (shipped / relative).is_file() else path


def output_location(instances: tuple) -> Path | None:
    """Where a stage writes: its `output_dir`, or the folder of its `output_file`."""
    for instance in instances:
        if getattr(instance, "output_dir", None):
            return Path(instance.output_dir)
        if getattr(instance, "output_file", None):
            return Path(instance.output_file).parent
    return None


MODEL_INPUT_FIELDS = ("model_name_or_path", "tokenizer_dir", "base_model", "adapter_dir")


def guard_output(output: Path | None, instances: tuple, overwrite: bool) -> None:
    """A stage never writes into a folder it reads a model from, and never replaces a finished model unless
    the recipe says `overwrite_output_dir: true`."""
    if output is None:
        return
    for instance in instances:
        for key in MODEL_INPUT_FIELDS:
            value = getattr(instance, key, None)
            if value and Path(value).resolve() == output.resolve():
                raise RecipeError(f"output_dir: '{output}' is also {key}: a stage never writes into its own input")
    finished = "a finished model" if finished_model(output) else None
    if (output / "report.json").is_file() and (output / "train").is_dir():
        finished = "finished data (train/valid/test)"
    if finished and not overwrite:
        raise RecipeError(
            f"output_dir: '{output}' holds {finished}; choose another output_dir, or set "
            "overwrite_output_dir: true to replace it"
        )


def is_main_process() -> bool:
    """Process 0 of an `accelerate launch` (or the only process): the one that writes shared files."""
    return int(os.environ.get("RANK", "0")) == 0


def stage_help(stage: str) -> str:
    module = import_stage(stage)
    doc = (module.__doc__ or "").strip()
    fields = recipe_fields(argument_specs(module))
    own = [s for s in argument_specs(module) if not isinstance(s, str)]
    own_keys = [f for spec in own for f in spec.__dataclass_fields__ if f in fields]
    others = [s for s in module.RECIPE_ARGUMENTS if isinstance(s, str)]
    lines = [f"stage {stage} (src/sccl_hf/stages/{stage}.py)", "", doc, "", "recipe keys:"]
    lines += [f"  {key}: {fields[key]}" for key in own_keys]
    lines += [f"  ... and every field of {spec.split(':')[1]} ({len(recipe_fields((spec,)))} keys)" for spec in others]
    return "\n".join(lines)


def run_recipe(recipe_path: str | Path, overrides: list[str]) -> dict:
    """Check the recipe, run its stage, and leave `recipe.yaml` and `results.json` beside the stage's output."""
    started = time.perf_counter()
    try:
        recipe_path = find_recipe(recipe_path)
        recipe = read_recipe(recipe_path)  # read once: the check, the parse and the record below use it
        stage = recipe["stage"]
        module = import_stage(stage, str(recipe_path))
        if "-h" in overrides or "--help" in overrides:
            print(stage_help(stage))
            raise SystemExit(0)
        *arguments, run_arguments = parse_recipe(recipe_path, overrides, argument_specs(module), recipe)
        output = output_location(arguments)
        guard_output(output, arguments, run_arguments.overwrite_output_dir)
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    resolved = resolved_recipe(recipe_path, overrides, (*arguments, run_arguments), recipe)
    if output is not None and is_main_process():
        output.mkdir(parents=True, exist_ok=True)
        (output / "recipe.yaml").write_text(yaml.safe_dump(resolved, allow_unicode=True, sort_keys=False))
        (output / "results.json").unlink(missing_ok=True)  # an earlier run's results: not this run's
    try:
        results = module.main(*arguments)
    except SCCLError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from error
    if output is not None and is_main_process():
        record = {
            "stage": stage,
            "recipe": str(recipe_path),
            "results": results,
            "elapsed_seconds": round(time.perf_counter() - started, 2),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": {"python": platform.python_version(), **_versions()},
            "git_commit": _git_commit(),
        }
        (output / "results.json").write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n")
    return results


def _versions() -> dict:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _git_commit() -> str | None:
    """The commit of the checkout this package runs from, if it runs from one."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None
