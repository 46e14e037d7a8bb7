"""The demo as a user runs it: its plain list of `sccl run` steps, and the same from an installed wheel."""

import json
import shlex
import subprocess
import sys
import sysconfig
import zipfile

import pytest
import yaml

from conftest import ROOT
from sccl_hf.apps.demo import STEPS
from sccl_hf.cli import run_command

pytestmark = pytest.mark.slow

# Small versions of each step, so the whole list runs in about a minute.
QUICK = {
    "tokenizer.yaml": ["--vocab_size", "600"],
    "pretrain.yaml": ["--preset", "tiny", "--max_steps", "4", "--logging_steps", "1", "--disable_tqdm", "true"],
    "sft.yaml": ["--max_steps", "4", "--disable_tqdm", "true"],
    "eval_sft.yaml": ["--max_rows", "16"],
    "dpo_data.yaml": ["--max_rows", "16"],
    "dpo.yaml": ["--max_steps", "2", "--disable_tqdm", "true"],
    "eval_dpo.yaml": ["--max_rows", "16"],
    "eval_ppl.yaml": ["--max_rows", "16"],
    "ceval.yaml": ["--max_questions", "1"],
}


def test_every_demo_step_leaves_its_resolved_recipe_and_results_and_a_demo_that_cannot_learn_fails(
    tmp_path, monkeypatch, shared_data, capsys
):
    """`run_demo` with quick steps and a learning rate of 0: every step runs and leaves its records, and the demo's
    own check fails, naming the figure."""
    from sccl_hf.apps.demo import run_demo

    (tmp_path / "shared").symlink_to(shared_data.parent)  # the demo reads ../shared/data, as from a checkout
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # the steps write under runs/demo/ of the current directory
    cannot_learn = {**QUICK, **{name: [*QUICK[name], "--learning_rate", "0"] for name in ("pretrain.yaml", "sft.yaml")}}
    with pytest.raises(SystemExit) as exit:
        run_demo(overrides=cannot_learn)
    assert exit.value.code == 1
    failures = capsys.readouterr().err
    assert "demo check failed" in failures and "held-out exact match after SFT is 0.0%, under 80%" in failures
    report_md, report_html = work / "runs/demo/report.md", work / "runs/demo/report.html"
    for step in STEPS:
        words = shlex.split(step)
        if words[1] == "report":
            continue
        recipe = words[-1]
        overrides = cannot_learn.get(recipe.rsplit("/", 1)[-1], [])
        stage_recipe = yaml.safe_load((ROOT / recipe).read_text(encoding="utf-8"))
        if "output_dir" in stage_recipe:
            output = work / stage_recipe["output_dir"]
        else:
            output = (work / stage_recipe["output_file"]).parent
        resolved = yaml.safe_load((output / "recipe.yaml").read_text(encoding="utf-8"))
        record = json.loads((output / "results.json").read_text(encoding="utf-8"))
        assert resolved["stage"] == stage_recipe["stage"] == record["stage"], step
        for key, value in zip(overrides[::2], overrides[1::2]):
            assert str(resolved[key[2:]]).lower() in (value.lower(), f"{value}.0"), (step, key)  # logging_steps: 1.0
    pretrain = json.loads((work / "runs/demo/pretrain/results.json").read_text())
    assert pretrain["results"]["steps"] == 4 and pretrain["results"]["prompt_tokens_seen"] > 0
    assert (work / "runs/demo/pretrain/trainer_state.json").is_file()  # the Trainer's own save_state
    assert (work / "runs/demo/pretrain/train_results.json").is_file()  # ... and save_metrics
    evaluation = json.loads((work / "runs/demo/eval/dpo/results.json").read_text())
    assert evaluation["results"]["rows"] == 16 and 0 <= evaluation["results"]["exact_match"] <= 1
    ceval = json.loads((work / "runs/demo/eval/ceval/results.json").read_text())["results"]
    assert ceval["methods"]["first_token"]["overall"]["questions"] == 52  # one question from each subject

    # The report card lists every stage of the demo, with its headline figures, tables and loss plots.
    report = report_md.read_text(encoding="utf-8")
    summary = report.split("\n\n")[1].splitlines()[2:-1]  # the first table: a row per stage, then the total
    table = [line.split("|")[1:3] for line in summary]
    listed = {(stage.strip(), folder.strip()) for stage, folder in table}
    expected = set()
    for step in STEPS:
        words = shlex.split(step)
        if words[1] == "run":
            stage_recipe = yaml.safe_load((ROOT / words[2]).read_text(encoding="utf-8"))
            folder = stage_recipe.get("output_dir") or stage_recipe["output_file"].rsplit("/", 1)[0]
            expected.add((stage_recipe["stage"], folder.removeprefix("runs/demo/")))
    assert listed == expected
    assert "![pretrain training_log.png](pretrain/training_log.png)" in report
    assert "| group | questions | loglikelihood | first_token |" in report  # C-Eval: a column per method
    # A dry run of publishing the demo model lists its model files only (and the card, with the demo's figures).
    dry = run_command(["push", "runs/demo/dpo", "--repo-id", "you/demo", "--dry-run"])
    listed = {f["path"] for f in dry["files"]}
    assert {"model.safetensors", "config.json", "modeling_chat_model.py", "tokenizer.json", "README.md"} <= listed
    assert not any(
        "checkpoint" in p or "optimizer" in p or p.endswith((".csv", ".png", "results.json")) for p in listed
    )
    plots = list((work / "runs/demo").rglob("training_log.png"))
    assert plots and report_html.read_text(encoding="utf-8").count("<img") == len(plots)


def test_an_installed_wheel_runs_the_demo_stages_outside_the_checkout(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(dist.glob("sccl_hf-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"sccl_hf/recipe_files/demo/tokenizer.yaml", "sccl_hf/apps/web/chat.html", "sccl_hf/stages/sft.py"} <= names
    assert {
        f"sccl_hf/recipe_files/{name}.yaml" for name in ("tokenizer", "pretrain", "sft", "dpo_data", "dpo")
    } <= names
    assert {"modeling_chat_model.py", "configuration_chat_model.py"} <= names

    # A fresh virtual environment that borrows this one's packages (torch and the rest) but not its sccl-hf.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()

    def sccl_in_venv(*args):
        result = subprocess.run([venv / "bin" / "sccl", *args], cwd=work, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        return result

    where = subprocess.run(
        [python, "-c", "import sccl_hf; print(sccl_hf.__file__)"], cwd=work, capture_output=True, text=True
    )
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    assert "stage sft" in sccl_in_venv("run", "recipes/sft.yaml", "--help").stdout  # the 0.2B recipes ship too
    sccl_in_venv("run", "recipes/demo/data.yaml")
    sccl_in_venv("run", "recipes/demo/tokenizer.yaml", "--vocab_size", "600")
    sccl_in_venv("run", "recipes/demo/pretrain.yaml", "--preset", "tiny", "--max_steps", "3", "--disable_tqdm", "true")
    model = work / "runs" / "demo" / "pretrain"
    assert (model / "model.safetensors").is_file() and (model / "modeling_chat_model.py").is_file()
    assert yaml.safe_load((model / "recipe.yaml").read_text())["max_steps"] == 3
    assert json.loads((model / "results.json").read_text())["results"]["steps"] == 3
