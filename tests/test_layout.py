"""The layout every stage plugs into: recipe -> stage module in one hop, light imports, run records."""

import ast
import dataclasses
import importlib
import json
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, run_python
from sccl_hf.recipes import RecipeError, load_argument_class, parse_recipe, read_recipe, recipe_fields
from sccl_hf.stages import find_recipe, run_recipe, stage_names

STAGES_DIR = ROOT / "src" / "sccl_hf" / "stages"
LIBRARY = [p for p in (ROOT / "src" / "sccl_hf").glob("*.py") if p.name != "cli.py"]


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").rglob("*.yaml")), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_recipe_names_a_stage_module(recipe):
    stage = read_recipe(recipe)["stage"]
    assert (STAGES_DIR / f"{stage}.py").is_file(), f"{recipe}: stage '{stage}' has no src/sccl_hf/stages/{stage}.py"


@pytest.mark.parametrize("stage", stage_names())
def test_every_stage_module_has_the_skeleton(stage):
    source = (STAGES_DIR / f"{stage}.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    names = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assigned = [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)]
    assert "main" in names and "RECIPE_ARGUMENTS" in assigned
    assert "__main__" not in source, "stages have no __main__ block: `sccl run` and recipes/run.py are the entry points"
    assert ast.get_docstring(tree), "each stage says what it reads and writes"


def test_library_modules_never_import_stages():
    for path in LIBRARY:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("sccl_hf.stages"), f"{path.name} imports {node.module}"


def test_no_module_uses_another_modules_private_names():
    """Modules use each other's public names only (the CTranslate2 batcher once called the engine's `_options` and
    `_source`): no `from sccl_hf.x import _y`, and no `obj._y` where `_y` is defined only in another module."""
    trees = {p: ast.parse(p.read_text(encoding="utf-8")) for p in (ROOT / "src" / "sccl_hf").rglob("*.py")}
    defined = {}  # a private function, method or class name -> the modules that define it
    for path, tree in trees.items():
        for node in ast.walk(tree):
            name = getattr(node, "name", None) or ""  # an ExceptHandler's name may be None
            is_private = name.startswith("_") and not name.startswith("__")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and is_private:
                defined.setdefault(name, set()).add(path)
    problems = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sccl_hf"):
                problems += [
                    f"{path.name}:{node.lineno} imports {a.name}" for a in node.names if a.name.startswith("_")
                ]
            if isinstance(node, ast.Attribute) and path not in defined.get(node.attr, {path}):
                problems.append(f"{path.name}:{node.lineno} uses {ast.unparse(node)}")
    assert not problems, problems


def test_both_engines_and_both_batchers_have_the_interface_the_apps_use():
    """`engine.GenerationEngine` and `engine.AnswerBatcher` (Protocols): each implementation has every method,
    with the same parameters and defaults."""
    import inspect

    from sccl_hf.batching import BatchedGenerator
    from sccl_hf.ct2 import CT2BatchedGenerator, CT2Engine
    from sccl_hf.engine import AnswerBatcher, Engine, GenerationEngine

    for protocol, implementations in ((GenerationEngine, (Engine, CT2Engine)),
                                      (AnswerBatcher, (BatchedGenerator, CT2BatchedGenerator))):  # fmt: skip
        methods = [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]
        assert methods
        for implementation in implementations:
            for name in methods:
                wanted = inspect.signature(getattr(protocol, name)).parameters
                have = inspect.signature(getattr(implementation, name)).parameters
                assert [(p.name, p.default) for p in have.values()] == [(p.name, p.default) for p in wanted.values()], (
                    implementation.__name__, name)  # fmt: skip


def test_nothing_imports_the_cli():
    """The command line sits on top: library, stages and apps never import it (the demo once did, and the CLI
    imported the demo: the project's one import circle)."""
    for path in (ROOT / "src" / "sccl_hf").rglob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            assert "sccl_hf.cli" not in names, f"{path.relative_to(ROOT)} imports sccl_hf.cli"


def test_checking_a_recipe_imports_nothing_heavy(tmp_path):
    """A recipe error (and --help) answers before torch, transformers or TRL load."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: dpo\nmodel_name_or_path: nowhere\nlearning_rat: 1\n", encoding="utf-8")
    result = run_python(
        f"""
import sys
from sccl_hf.cli import main
for argv in (["run", {str(bad)!r}], ["run", {str(ROOT / "recipes/demo/sft.yaml")!r}, "--help"], ["run", {str(bad)!r}, "--beta", "x"]):
    try:
        main(argv)
    except SystemExit as exit:
        print("exit", exit.code)
print(sorted(m for m in ("torch", "transformers", "trl", "peft", "datasets") if m in sys.modules))
""",
        cwd=tmp_path,
    )
    assert "unknown key 'learning_rat' (did you mean 'learning_rate'?)" in result.stderr
    assert "recipe keys:" in result.stdout and "freeze_embeddings_and_encoder" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


@pytest.mark.parametrize(
    "spec", ["transformers.training_args_seq2seq:Seq2SeqTrainingArguments", "trl.trainer.dpo_config:DPOConfig"]
)
def test_fields_read_from_source_equal_the_imported_class(spec):
    real = {f.name for f in dataclasses.fields(load_argument_class(spec)) if f.init}
    assert set(recipe_fields((spec,))) == real


def test_unknown_stage_lists_the_stage_modules(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("stage: pretrian\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "run.py"), str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "unknown stage 'pretrian'; stages are" in result.stderr and "pretrain, push, sft" in result.stderr


def test_a_key_given_twice_is_an_error(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("stage: demo_data\nseed: 1\nseed: 2\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="the key 'seed' is given twice"):
        parse_recipe(path, [], importlib.import_module("sccl_hf.stages.demo_data").RECIPE_ARGUMENTS)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("learning_rate: null", "learning_rate: null is not allowed"),
        ("bf16: maybe", "bf16: invalid bool value: 'maybe'"),
        ("eval_files: null", "eval_files: null is not allowed"),
        ("max_seq_len: [1, 2]", "max_seq_len: expects a single value"),
    ],
)
def test_value_errors_name_the_field(tmp_path, demo_data, tokenizer_dir, line, message):
    path = tmp_path / "recipe.yaml"
    path.write_text(
        f"stage: pretrain\ntokenizer_dir: {tokenizer_dir}\ntrain_files: [{demo_data['pretrain']}]\n{line}\n",
        encoding="utf-8",
    )
    module = importlib.import_module("sccl_hf.stages.pretrain")
    with pytest.raises(RecipeError, match=message):
        parse_recipe(path, [], module.RECIPE_ARGUMENTS)


def test_a_stage_leaves_its_resolved_recipe_and_results(tmp_path):
    out = tmp_path / "data"
    run_recipe(ROOT / "recipes" / "demo" / "data.yaml", ["--output_dir", str(out), "--seed", "3"])
    recipe = yaml.safe_load((out / "recipe.yaml").read_text(encoding="utf-8"))
    assert recipe == {"stage": "demo_data", "output_dir": str(out), "seed": 3}
    record = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert record["stage"] == "demo_data" and record["results"]["rows"]["sft"] > 100
    assert {"python", "torch", "transformers", "trl", "sccl-hf"} <= set(record["versions"])
    assert record["elapsed_seconds"] >= 0 and "git_commit" in record


def test_shipped_recipes_are_found_by_their_repository_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no recipes/ folder here: the package's own copy is used
    found = find_recipe("recipes/demo/sft.yaml")
    assert found.is_file() and read_recipe(found)["stage"] == "sft"
