"""Publishing: the push plan and model card, and pushes to a local stand-in of the hubs' HTTP APIs (127.0.0.1)
through the real client libraries, in separate processes, with loading back by hub id."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, run_sft
from helpers.local_hub import LFS_SIZE, LocalHub

PROMPT = "浙江的省会是哪里？"


def client_env(hub, tmp_path, **extra) -> dict:
    """A client process's environment: the hubs' documented endpoint and token variables, and caches of its own."""
    env = {**os.environ, **hub.env(), "HF_HOME": str(tmp_path / "hf_home"), "MODELSCOPE_CACHE": str(tmp_path / "ms")}
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def sccl(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "sccl_hf.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)  # fmt: skip


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, trained_model_dir, fixed_rows_file):
    """A run folder like the demo's: an SFT model (checkpoints, optimizer states and logs beside it), and two
    evaluations of it."""
    from sccl_hf.stages import run_recipe

    run = tmp_path_factory.mktemp("run")
    run_sft(trained_model_dir, fixed_rows_file, run / "sft", 4, "--save_strategy", "steps", "--save_steps", "2")
    for stage in ("eval_gen", "eval_ppl"):
        recipe = run / f"{stage}.yaml"
        recipe.write_text(f"stage: {stage}\nmodel_name_or_path: {run / 'sft'}\neval_files: [{fixed_rows_file}]\n")
        run_recipe(recipe, ["--output_dir", str(run / "eval" / stage)])
    return run


MODEL_FILES = {"README.md", "chat_template.jinja", "config.json", "configuration_chat_model.py",
               "generation_config.json", "model.safetensors", "modeling_chat_model.py", "tokenizer.json",
               "tokenizer_config.json"}  # fmt: skip


def test_a_dry_run_lists_the_model_files_and_nothing_else(sft_run):
    from sccl_hf.cli import run_command

    assert any(sft_run.glob("sft/checkpoint-*/optimizer.pt")) and (sft_run / "sft" / "training_log.csv").is_file()
    results = run_command(["push", str(sft_run / "sft"), "--repo-id", "tester/sft", "--dry-run"])
    listed = {f["path"] for f in results["files"]}
    assert listed == MODEL_FILES
    sizes = {f["path"]: f["size"] for f in results["files"]}
    assert sizes["model.safetensors"] == (sft_run / "sft" / "model.safetensors").stat().st_size
    more = run_command(
        ["push", str(sft_run / "sft"), "--repo-id", "tester/sft", "--dry-run", "--include", "results.json"]
    )
    assert {f["path"] for f in more["files"]} == MODEL_FILES | {"results.json"}


def test_the_card_shows_the_figures_of_the_results_files(sft_run, trained_model_dir):
    from sccl_hf.publish import model_card

    card = model_card(sft_run / "sft", "tester/sft")
    front = card.split("---")[1]
    assert "license: apache-2.0" in front and "- zh" in front and "library_name: transformers" in front
    assert 'AutoModelForSeq2SeqLM.from_pretrained("tester/sft", trust_remote_code=True)' in card
    assert "my_generate(" in card
    rows = {
        (e.split(" ")[0], m): float(v) for e, m, v in re.findall(r"\| (eval_\w+ \(.*?\)) \| (\w+) \| ([\d.]+) \|", card)
    }
    for stage in ("eval_gen", "eval_ppl"):
        results = json.loads((sft_run / "eval" / stage / "results.json").read_text())["results"]
        shown = {m: v for (s, m), v in rows.items() if s == stage}
        assert shown and all(round(results[m], 4) == v for m, v in shown.items()), (stage, shown)
    # the same figures as the Hub's model-index metadata, read back by huggingface_hub's own parser
    from huggingface_hub import ModelCard

    indexed = {(r.dataset_name.split(" ")[0], r.metric_type): r.metric_value for r in ModelCard(card).data.eval_results}
    assert indexed == rows
    # How it was made: the pretraining recipe, then SFT, each with its steps and final loss.
    sft = json.loads((sft_run / "sft" / "results.json").read_text())["results"]
    pretrain = json.loads((trained_model_dir / "results.json").read_text())["results"]
    made = re.findall(r"\| (pretrain|sft) \| .*? \| (\d+) \| ([\d.]+) \|", card)
    assert made == [("pretrain", str(pretrain["steps"]), f"{pretrain['final_loss']:.4f}"),
                    ("sft", str(sft["steps"]), f"{sft['final_loss']:.4f}")]  # fmt: skip
    params = re.search(r"\| parameters \| ([\d,]+) ", card).group(1)
    from sccl_hf.model import count_parameters, load_model

    assert int(params.replace(",", "")) == count_parameters(load_model(sft_run / "sft"))


def answer_from_hub(env, repo_id: str) -> str:
    """Load by hub id in a fresh process, the way the card says, and answer PROMPT greedily."""
    code = f"""
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
model = AutoModelForSeq2SeqLM.from_pretrained({repo_id!r}, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained({repo_id!r})
batch = tokenizer([{PROMPT!r}], return_tensors="pt")
output = model.my_generate(batch["input_ids"], batch["attention_mask"], max_seq_len=16, search_type="greedy")
print("ANSWER=" + tokenizer.batch_decode(output, skip_special_tokens=True)[0].strip())
"""
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                            cwd=env["HF_HOME"])  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split("ANSWER=")[-1].strip()


@pytest.mark.slow
def test_push_to_the_hugging_face_hub_and_load_back_by_id(sft_run, tmp_path, fixed_rows_file):
    from sccl_hf.engine import Engine

    local_answer = Engine.load(sft_run / "sft", "cpu").generate([PROMPT], max_new_tokens=16)[0]
    (tmp_path / "hf_home").mkdir()
    with LocalHub() as hub:
        env = client_env(hub, tmp_path)
        # An interrupted push (the connection drops at the commit, after the large files went up) ...
        hub.fail_next_commit = True
        first = sccl(env, "push", sft_run / "sft", "--repo-id", "tester/sft")
        assert first.returncode != 0 and "refused the upload" in first.stderr
        sent = hub.lfs_uploads()
        large = [
            p
            for p in (sft_run / "sft").iterdir()
            if p.name in MODEL_FILES and (p.suffix == ".safetensors" or p.stat().st_size >= LFS_SIZE)
        ]
        assert sent == len(large) >= 1  # the large files went up before the commit failed
        # ... run again sends only what is missing: the large files are on the hub already.
        second = sccl(env, "push", sft_run / "sft", "--repo-id", "tester/sft")
        assert second.returncode == 0, second.stderr[-3000:]
        assert hub.lfs_uploads() == sent
        files = hub.repos["tester/sft"].branches["main"]
        assert set(files) == MODEL_FILES
        assert "checkpoint" not in " ".join(files) and "optimizer" not in " ".join(files)
        # A fresh process loads it by id (from_pretrained, remote code from the hub) and answers the same.
        assert answer_from_hub(env, "tester/sft") == local_answer
        # A branch
        branch = sccl(env, "push", sft_run / "sft", "--repo-id", "tester/sft", "--revision", "v1")
        assert branch.returncode == 0 and set(hub.repos["tester/sft"].branches["v1"]) == MODEL_FILES
        # A stage reads the hub id too (snapshot_download into the hub library's cache).
        recipe = tmp_path / "gen.yaml"
        recipe.write_text(f"stage: eval_gen\nmodel_name_or_path: tester/sft\neval_files: [{fixed_rows_file}]\n")
        stage = sccl(env, "run", recipe, "--output_dir", tmp_path / "gen")
        assert stage.returncode == 0, stage.stderr[-3000:]
        assert json.loads((tmp_path / "gen" / "results.json").read_text())["results"]["exact_match"] == 1.0


@pytest.mark.slow
def test_push_to_modelscope_and_load_back_by_id(sft_run, tmp_path):
    from sccl_hf.engine import Engine

    model = tmp_path / "model"
    shutil.copytree(sft_run / "sft", model, ignore=shutil.ignore_patterns("checkpoint-*"))
    local_answer = Engine.load(model, "cpu").generate([PROMPT], max_new_tokens=16)[0]
    (tmp_path / "hf_home").mkdir()
    with LocalHub() as hub:
        env = client_env(hub, tmp_path)
        pushed = sccl(env, "push", model, "--repo-id", "tester/ms", "--hub", "modelscope")
        assert pushed.returncode == 0, pushed.stderr[-3000:]
        assert set(hub.repos["tester/ms"].branches["master"]) == MODEL_FILES | {"configuration.json"}
        sent = hub.lfs_uploads()
        again = sccl(env, "push", model, "--repo-id", "tester/ms", "--hub", "modelscope")
        assert again.returncode == 0 and sent >= 1 and hub.lfs_uploads() == sent  # nothing large sent twice
        # chat with a modelscope:// id: snapshot_download, then the local engine
        chat = subprocess.run([sys.executable, "-m", "sccl_hf.cli", "chat", "--model", "modelscope://tester/ms",
                               "--max-new-tokens", "16"], input=f"{PROMPT}\n/exit\n", env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert chat.returncode == 0, chat.stderr[-3000:]
        assert f"模型: {local_answer}" in chat.stdout


def test_a_missing_or_rejected_token_stops_before_any_upload(sft_run, tmp_path):
    (tmp_path / "hf_home").mkdir()
    with LocalHub() as hub:
        for hub_name, variable in (("hf", "HF_TOKEN"), ("modelscope", "MODELSCOPE_API_TOKEN")):
            missing = sccl(client_env(hub, tmp_path, **{variable: None}), "push", sft_run / "sft",
                           "--repo-id", "tester/x", "--hub", hub_name)  # fmt: skip
            assert missing.returncode == 2 and "nothing was uploaded" in missing.stderr, missing.stderr[-2000:]
            wrong = sccl(client_env(hub, tmp_path, **{variable: "not-the-token"}), "push", sft_run / "sft",
                         "--repo-id", "tester/x", "--hub", hub_name)  # fmt: skip
            assert wrong.returncode == 2 and "nothing was uploaded" in wrong.stderr, wrong.stderr[-2000:]
        assert hub.repos == {} and hub.lfs == {}
        assert not any(path.endswith(("/commit/main", "/commit/master", "/repos/create")) for _, path in hub.requests)


@pytest.mark.slow
def test_push_to_hub_in_a_training_recipe_uses_the_trainers_push(tmp_path, trained_model_dir, fixed_rows_file):
    (tmp_path / "hf_home").mkdir()
    with LocalHub() as hub:
        env = client_env(hub, tmp_path)
        run = sccl(env, "run", ROOT / "recipes/demo/sft.yaml", "--model_name_or_path", trained_model_dir,
                   "--train_files", fixed_rows_file, "--output_dir", tmp_path / "sft", "--max_steps", "2",
                   "--push_to_hub", "true", "--hub_model_id", "tester/trained", "--disable_tqdm", "true")  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        files = hub.repos["tester/trained"].branches["main"]
        assert MODEL_FILES <= set(files)  # the finished folder, remote code and tokenizer included
        card = files["README.md"].decode()  # our card, not the Trainer's
        assert card.startswith("---\n") and "license: apache-2.0" in card.split("---")[1] and "sccl-hf" in card
