import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from transformers import Seq2SeqTrainingArguments

from conftest import ROOT
from sccl_hf.recipes import DataArguments, ModelArguments, RecipeError, parse_recipe
from sccl_hf.stages import argument_specs, stage_names

SEQ2SEQ = (ModelArguments, DataArguments, Seq2SeqTrainingArguments)


def write_recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def base(demo_data, tokenizer_dir) -> str:
    return f"stage: pretrain\ntokenizer_dir: {tokenizer_dir}\ntrain_files: [{demo_data['pretrain']}]\noutput_dir: out\n"


def test_recipe_and_overrides_fill_the_dataclasses(tmp_path, demo_data, tokenizer_dir):
    path = write_recipe(
        tmp_path, base(demo_data, tokenizer_dir) + "learning_rate: 3.0e-4\nmax_seq_len: 64\nbf16: false\n"
    )
    model_args, data_args, training_args = parse_recipe(path, ["--max_seq_len", "32"], SEQ2SEQ)
    assert training_args.learning_rate == 3e-4
    assert data_args.max_seq_len == 32  # the command line wins
    assert data_args.train_paths == [demo_data["pretrain"]]
    assert model_args.tokenizer_dir == str(tokenizer_dir)


def test_unknown_key_is_an_error_naming_it(tmp_path, demo_data, tokenizer_dir):
    path = write_recipe(tmp_path, base(demo_data, tokenizer_dir) + "learning_rat: 1.0e-4\n")
    with pytest.raises(
        RecipeError, match=r"recipe\.yaml: unknown key 'learning_rat' \(did you mean 'learning_rate'\?\)"
    ):
        parse_recipe(path, [], SEQ2SEQ)


def test_unknown_override_is_an_error(tmp_path, demo_data, tokenizer_dir):
    path = write_recipe(tmp_path, base(demo_data, tokenizer_dir))
    with pytest.raises(RecipeError, match="command line: unknown key 'epochs'"):
        parse_recipe(path, ["--epochs", "3"], SEQ2SEQ)


def test_wrong_type_is_an_error_naming_the_key(tmp_path, demo_data, tokenizer_dir):
    path = write_recipe(tmp_path, base(demo_data, tokenizer_dir) + "max_seq_len: lots\n")
    with pytest.raises(RecipeError, match=r"max_seq_len.*invalid int value: 'lots'"):
        parse_recipe(path, [], SEQ2SEQ)


def test_missing_input_file_is_an_error_naming_it(tmp_path, tokenizer_dir):
    path = write_recipe(
        tmp_path, f"stage: pretrain\ntokenizer_dir: {tokenizer_dir}\ntrain_files: [nowhere/data.parquet]\n"
    )
    with pytest.raises(RecipeError, match=r"train_files: no such file or directory: 'nowhere/data\.parquet'"):
        parse_recipe(path, [], SEQ2SEQ)


def test_null_and_empty_list_values_keep_their_meaning(tmp_path, demo_data, tokenizer_dir):
    path = write_recipe(tmp_path, base(demo_data, tokenizer_dir) + "eval_files: []\nresume_from_checkpoint: null\n")
    _, data_args, training_args = parse_recipe(path, [], SEQ2SEQ)
    assert data_args.eval_files == [] and data_args.eval_paths == []
    assert training_args.resume_from_checkpoint is None


def test_glob_and_directory_inputs_expand(tmp_path, demo_data, tokenizer_dir):
    folder = demo_data["pretrain"].parent
    path = write_recipe(
        tmp_path,
        f"stage: sft\ntokenizer_dir: {tokenizer_dir}\ntrain_files: ['{folder}/*.parquet']\neval_files: [{folder}]\n",
    )
    _, data_args, _ = parse_recipe(path, [], SEQ2SEQ)
    assert data_args.train_paths == sorted(folder.glob("*.parquet")) and len(data_args.train_paths) >= 3
    assert data_args.eval_paths == data_args.train_paths


def test_runner_exits_with_a_one_line_error(tmp_path, demo_data, tokenizer_dir):
    path = write_recipe(tmp_path, base(demo_data, tokenizer_dir) + "warmup: 10\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "run.py"), str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "error:" in result.stderr and "unknown key 'warmup'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").rglob("*.yaml")), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_recipe_parses(recipe, tmp_path, demo_data, tokenizer_dir, tiny_model_dir):
    """Shipped recipes name a known stage and only known keys of the right types (their paths are pointed at
    test files, and GPU recipes are parsed with bf16 off, since this machine may have no GPU)."""
    import importlib
    import json

    from sccl_hf.recipes import read_recipe

    recipe_keys = read_recipe(recipe)
    stage = recipe_keys["stage"]
    assert stage in stage_names()
    module = importlib.import_module(f"sccl_hf.stages.{stage}")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir)}))
    replacements = {
        "train_files": [str(demo_data["sft"])],
        "files": [str(demo_data["sft"])],
        "eval_files": [str(demo_data["held_out"])],
        "reference_files": [str(demo_data["sft"])],
        "model_name_or_path": [str(tiny_model_dir)],
        "model_dir": [str(tiny_model_dir)],
        "tokenizer_dir": [str(tokenizer_dir)],
        "adapter_dir": [str(adapter)],
        "base_model": [str(tiny_model_dir)],
        "output_file": [str(tmp_path / "out.jsonl")],
        "bf16": ["false"],
        "compare_with": [str(tmp_path / "other_eval")],
    }
    (tmp_path / "other_eval").mkdir()
    (tmp_path / "other_eval" / "predictions.jsonl").touch()
    if "data_dir" in recipe_keys:  # exam recipes: a stand-in folder with an empty file per subject and split
        from sccl_hf.choice_eval import BENCHMARKS

        benchmark = BENCHMARKS[recipe_keys.get("benchmark", "ceval")]
        split = recipe_keys.get("split") or benchmark.default_split
        for subject in benchmark.subjects:
            for part in (split, "dev"):
                (tmp_path / "exam" / part).mkdir(parents=True, exist_ok=True)
                (tmp_path / "exam" / part / f"{subject}_{part}.csv").touch()
        replacements["data_dir"] = [str(tmp_path / "exam")]
    overrides = [word for key, value in replacements.items() if key in recipe_keys for word in (f"--{key}", *value)]
    if "sources" in recipe_keys:  # data recipes: each source's files become empty stand-ins of the same names
        for source in recipe_keys["sources"]:
            patterns = [source["files"]] if isinstance(source["files"], str) else source["files"]
            stand_ins = [tmp_path / source["name"] / Path(p.replace("*", "x")).name for p in patterns]
            for stand_in in stand_ins:
                stand_in.parent.mkdir(parents=True, exist_ok=True)
                stand_in.touch()
            source["files"] = [str(p) for p in stand_ins]
        recipe = tmp_path / recipe.name
        recipe.write_text(yaml.safe_dump(recipe_keys, allow_unicode=True), encoding="utf-8")
    parse_recipe(recipe, overrides, argument_specs(module))


# -- the ChatLM 0.2B recipes: the design card's commands ---------------------------------------------------------

PIPELINE_0P2B = [
    "data/chatlm_mix", "tokenizer", "pretrain", "data/belle_sft", "sft", "data/dpo_reference", "dpo_data",
    "data/dpo_mix", "dpo", "dpo_lora", "merge_lora",
]  # fmt: skip
INPUT_KEYS = ("files", "tokenizer_dir", "model_name_or_path", "train_files", "eval_files", "reference_files",
              "adapter_dir", "compare_with")  # fmt: skip


def assert_recipes_chain(paths: list[Path], outside: tuple[str, ...] = ()) -> None:
    """Run in this order, each recipe reads only what an earlier one wrote (or a path under `outside`)."""
    from sccl_hf.recipes import read_recipe

    written: list[str] = []
    for path in paths:
        recipe = read_recipe(path)
        if recipe["stage"] != "data":
            for key in INPUT_KEYS:
                values = recipe.get(key) or []
                for value in [values] if isinstance(values, str) else values:
                    assert value.startswith(outside) or any(value == w or value.startswith(w + "/") for w in written), (
                        f"{path.relative_to(ROOT)}: {key} '{value}' is written by no earlier recipe ({written})"
                    )
        output = recipe.get("output_dir") or str(Path(recipe["output_file"]).parent)
        if recipe["stage"] == "data":
            written += [f"{output}/train", f"{output}/valid", f"{output}/test"]
        else:
            written.append(recipe.get("output_file") or output)
        if recipe.get("save_each_epoch"):
            written.append(f"{output}/epoch-1")


def test_the_top_level_recipes_chain_by_their_default_paths():
    """Run in this order, the seven top-level commands, with the data recipes before them, are the whole 0.2B
    pipeline: each reads only what an earlier one wrote (raw downloads aside)."""
    from sccl_hf.recipes import read_recipe

    assert_recipes_chain([ROOT / "recipes" / f"{name}.yaml" for name in PIPELINE_0P2B])
    assert read_recipe(ROOT / "recipes" / "dpo_data.yaml")["model_name_or_path"] == "runs/sft/epoch-1"


def test_the_mini_chain_runs_every_mini_recipe_in_an_order_that_chains():
    """`make mini` runs recipes/mini/run.sh; the script runs every recipes/mini/*.yaml once, each after the
    recipes that write what it reads (the shared data aside), and ends with the report card. Recipes run beside the
    chain are named in its closing comment, and chain after it."""
    import re

    assert "bash recipes/mini/run.sh" in (ROOT / "Makefile").read_text()
    script = (ROOT / "recipes" / "mini" / "run.sh").read_text()
    listed = re.findall(r"^step run (recipes/mini/\S+\.yaml)", script, flags=re.M)
    beside = re.findall(r"sccl run (recipes/mini/\S+\.yaml)", script.split("\nstep report")[-1])
    shipped = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "recipes" / "mini").glob("*.yaml"))
    assert sorted(listed + beside) == shipped and len(set(listed + beside)) == len(listed + beside)
    assert_recipes_chain([ROOT / name for name in listed + beside], outside=("../shared/data/",))
    assert re.findall(r"^step (.*)$", script, flags=re.M)[-1].split("#")[0].strip() == "report runs/mini"


def test_stage_help_of_a_top_level_recipe():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "sccl"), "run", "recipes/pretrain.yaml", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "stage pretrain (src/sccl_hf/stages/pretrain.py)" in result.stdout and "tokenizer_dir" in result.stdout


def test_run_help_without_a_recipe_names_the_launch_presets_and_version_answers():
    sccl = str(Path(sys.executable).parent / "sccl")
    helped = subprocess.run([sccl, "run", "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "--accelerate_config NAME" in helped.stdout and "deepspeed_zero2" in helped.stdout
    bare = subprocess.run([sccl, "run"], capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and "usage: sccl run RECIPE" in bare.stdout
    from importlib import metadata

    version = subprocess.run([sccl, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"sccl {metadata.version('sccl-hf')}"


@pytest.mark.slow
def test_the_design_cards_command_trains_and_saves(tmp_path, tiny_model_dir, demo_data):
    """`accelerate launch recipes/run.py recipes/sft.yaml` as the card writes it, from the checkout, with CPU-sized
    overrides: the recipe's own settings train two steps (two epochs of 24 rows: 48 rows per update), save the
    model, and keep the epoch-1 model that recipes/dpo_data.yaml reads. Model config and tokenizer agree from the
    start: transformers has no special tokens to "align" and no warning to print."""
    import pyarrow.parquet as pq

    from conftest import write_parquet
    from sccl_hf.model_folder import finished_model

    rows = pq.read_table(demo_data["sft"]).slice(0, 24).to_pylist()
    train = write_parquet(tmp_path / "sft.parquet", [{"prompt": r["prompt"], "response": r["response"]} for r in rows])
    output = tmp_path / "sft"
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "recipes/run.py", "recipes/sft.yaml",
               "--model_name_or_path", str(tiny_model_dir), "--train_files", str(train), "--output_dir", str(output),
               "--max_steps", "2", "--max_seq_len", "64", "--bf16", "false", "--disable_tqdm", "true"]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "true"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((output / "results.json").read_text(encoding="utf-8"))
    assert record["recipe"].endswith("recipes/sft.yaml") and record["results"]["steps"] == 2
    ran = yaml.safe_load((output / "recipe.yaml").read_text(encoding="utf-8"))
    assert ran["learning_rate"] == 5.0e-5 and ran["optim"] == "adafactor" and ran["freeze_embeddings_and_encoder"]
    assert finished_model(output) and finished_model(output / "epoch-1")
    assert "differ from the model config" not in result.stdout + result.stderr
