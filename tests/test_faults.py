"""Faults and bad input: nothing finished is ever lost, and nothing trains silently wrong (issue 9, items 1-14).

Each test names the item it pins down."""

import copy
import csv
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, quick, write_parquet
from conftest import run_sft as sft
from sccl_hf.errors import DataError, ModelFolderError, RecipeError
from sccl_hf.model import load_model, load_tokenizer
from sccl_hf.stages import run_recipe
from sccl_hf.tables import load_table

pytestmark = pytest.mark.slow
DEMO = ROOT / "recipes" / "demo"
MODEL_FILES = {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "modeling_chat_model.py"}


def logged_steps(output_dir) -> list[int]:
    with open(output_dir / "training_log.csv") as f:
        return [int(float(r["step"])) for r in csv.DictReader(f) if r.get("loss")]


# 1 and 9 ------------------------------------------------------------------------------------------------------
def test_1_resume_skips_a_half_written_checkpoint_and_9_keeps_the_log(
    trained_model_dir, fixed_rows_file, tmp_path, caplog
):
    saving = ["--save_strategy", "steps", "--save_steps", "2"]
    sft(trained_model_dir, fixed_rows_file, tmp_path, 4, *saving)
    newest = tmp_path / "checkpoint-4"
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a save cut short
    with caplog.at_level(logging.WARNING, logger="sccl_hf.training"):
        sft(trained_model_dir, fixed_rows_file, tmp_path, 6, *saving, "--resume_from_checkpoint", "true")
    assert f"skipping the incomplete checkpoint {newest}" in caplog.text and "is cut short" in caplog.text
    state = json.loads((tmp_path / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    # Resumed from step 2: steps 3 and 4 ran again, and the log keeps the rows from before the resume.
    assert logged_steps(tmp_path) == [1, 2, 3, 4, 5, 6]


# 2 ------------------------------------------------------------------------------------------------------------
class SignalArrived(Exception):
    pass


@pytest.mark.parametrize("moment", ["final evaluation", "final save"])
def test_2_a_signal_during_the_final_evaluation_or_save_keeps_the_finished_model(
    moment, trained_model_dir, fixed_rows_file, tmp_path, monkeypatch, capsys
):
    import transformers

    import sccl_hf.training

    def send_sigint_then(function):
        def wrapped(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)
            return function(*args, **kwargs)

        return wrapped

    if moment == "final evaluation":
        monkeypatch.setattr(transformers.Trainer, "evaluate", send_sigint_then(transformers.Trainer.evaluate))
    else:
        monkeypatch.setattr(sccl_hf.training, "save_tokenizer", send_sigint_then(sccl_hf.training.save_tokenizer))

    def test_handler(signum, frame):  # if the stage does not hold the signal, the test fails here, cleanly
        raise SignalArrived

    previous = signal.signal(signal.SIGINT, test_handler)
    try:
        with pytest.raises(SystemExit) as exit:
            sft(trained_model_dir, fixed_rows_file, tmp_path, 4, "--eval_files", str(fixed_rows_file),
                "--eval_strategy", "steps", "--eval_steps", "4")  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)
    assert exit.value.code == 130
    assert MODEL_FILES <= {p.name for p in tmp_path.iterdir()}
    assert load_model(tmp_path).config.vocab_size > 0 and load_tokenizer(tmp_path).eos_token_id == 1
    assert f"the final model is complete in {tmp_path.resolve()}" in capsys.readouterr().err


# 3 ------------------------------------------------------------------------------------------------------------
def test_3_a_model_folder_without_tokenizer_files_is_an_error_naming_it(tiny_model_dir, tmp_path):
    bare = tmp_path / "no_tokenizer"
    shutil.copytree(tiny_model_dir, bare)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        (bare / name).unlink(missing_ok=True)
    with pytest.raises(ModelFolderError, match=f"{bare}: no tokenizer files"):
        load_tokenizer(bare)
    result = subprocess.run(
        [sys.executable, "-c", "from sccl_hf.cli import main; main()", "serve", "--model", str(bare)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0 and f"{bare}: no tokenizer files" in result.stderr


# 4 ------------------------------------------------------------------------------------------------------------
def test_4_a_non_finite_loss_stops_the_run_naming_the_step(tokenizer_dir, fixed_rows_file, tmp_path):
    command = [sys.executable, str(ROOT / "recipes" / "run.py"), str(DEMO / "pretrain.yaml"), "--preset", "tiny",
               "--tokenizer_dir", str(tokenizer_dir), "--train_files", str(fixed_rows_file),
               *quick(tmp_path, 20, "--learning_rate", "1e30", "--max_grad_norm", "0")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "error: non-finite loss" in result.stderr and "at step" in result.stderr
    assert "learning rate" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "model.safetensors").exists()  # nothing saved as if it had worked


# 5 ------------------------------------------------------------------------------------------------------------
def test_5_streaming_with_no_usable_rows_is_an_error_naming_files_and_reasons(tokenizer_dir, tmp_path, capsys):
    nulls = write_parquet(tmp_path / "nulls.parquet", [{"prompt": None, "response": "答"}] * 3)
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b'{"prompt": "\xff\xfe", \n[1, 2]\n{"prompt": "", "response": "x"}\n')
    with pytest.raises(SystemExit) as exit:
        run_recipe(DEMO / "pretrain.yaml", ["--preset", "tiny", "--tokenizer_dir", str(tokenizer_dir),
                                            "--train_files", str(nulls), str(broken), "--streaming", "true",
                                            *quick(tmp_path / "out", 3)])  # fmt: skip
    assert exit.value.code == 1
    error = capsys.readouterr().err
    assert "no usable rows" in error and "nulls.parquet: 3 null prompt (row 0, row 1, row 2)" in error
    assert "broken.jsonl" in error and "1 invalid UTF-8 (line 1)" in error
    assert "1 not a JSON object (line 2)" in error and "1 empty prompt (line 3)" in error


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["--max_steps", "-5"], "max_steps: -5 is out of range"),
        (["--per_device_train_batch_size", "0"], "per_device_train_batch_size: 0 is out of range"),
        (["--train_files", "missing.parquet"], "train_files: no such file or directory: 'missing.parquet'"),
        (["--model_name_or_path", "no/such/folder"], "model_name_or_path: no such model directory: 'no/such/folder'"),
    ],
)
def test_5_bad_values_are_refused_before_any_model(words, message, demo_data, tokenizer_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        run_recipe(DEMO / "pretrain.yaml", ["--tokenizer_dir", str(tokenizer_dir), "--train_files",
                                            str(demo_data["pretrain"]), "--output_dir", str(tmp_path), *words])  # fmt: skip
    assert exit.value.code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was built or written


def test_5_nulls_for_required_fields_and_keys_given_twice_are_refused(tmp_path):
    from sccl_hf.recipes import parse_recipe
    from sccl_hf.stages.sft import RECIPE_ARGUMENTS

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stage: sft\nlearning_rate: null\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="learning_rate: null is not allowed"):
        parse_recipe(recipe, [], RECIPE_ARGUMENTS)
    recipe.write_text("stage: sft\nlearning_rate: 1.0e-4\nlearning_rate: 1.0e-3\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="the key 'learning_rate' is given twice"):
        parse_recipe(recipe, [], RECIPE_ARGUMENTS)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["serve", "--model", "{model}", "--workers", "0"], "--workers: must be at least 1, got 0"),
        (["serve", "--model", "no/such/model"], "no such model folder: 'no/such/model'"),
        (["chat", "--model", "no/such/model"], "no such model folder: 'no/such/model'"),
    ],
)
def test_5_bad_command_line_values_are_refused(command, message, tiny_model_dir):
    words = [w.format(model=tiny_model_dir) for w in command]
    result = subprocess.run([sys.executable, "-c", "from sccl_hf.cli import main; main()", *words],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and message in result.stderr
    assert "Loading" not in result.stderr  # refused before the model


# 6 ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("streaming", [False, True], ids=["in memory", "streamed"])
def test_6_bad_rows_are_counted_by_reason_in_memory_and_streamed_alike(streaming, tmp_path, caplog):
    lines = tmp_path / "mixed.jsonl"
    lines.write_bytes(
        b'{"prompt": "\xe9\x97\xae\xe4\xb8\x80", "response": "\xe7\xad\x94\xe4\xb8\x80"}\n'  # 问一 / 答一
        b'{"prompt": "\xff bad bytes", "response": "x"}\n'
        b'{"prompt": "cut short", \n'
        b'["an", "array"]\n'
        b'{"prompt": "\xe9\x97\xae\xe4\xba\x8c", "response": "\xe7\xad\x94\xe4\xba\x8c"}\n'  # 问二 / 答二
    )
    array = tmp_path / "array.json"
    array.write_text(json.dumps([{"prompt": "问三", "response": "答三"}, "not an object", 7]), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="sccl_hf.tables"):
        rows = list(load_table([lines, array], ["prompt", "response"], streaming=streaming))
    assert sorted(r["prompt"] for r in rows) == ["问一", "问三", "问二"]
    assert "mixed.jsonl: skipped" in caplog.text and "1 invalid UTF-8 (line 2)" in caplog.text
    assert "1 not valid JSON (line 3)" in caplog.text and "1 not a JSON object (line 4)" in caplog.text
    assert "array.json: skipped 2 not a JSON object (item 1, item 2)" in caplog.text


def test_6_an_unreadable_file_is_an_error_naming_it_and_hidden_folders_are_not_data(tmp_path):
    from sccl_hf.recipes import resolve_files

    fake = tmp_path / "fake.parquet"
    fake.write_text("this is not parquet", encoding="utf-8")
    with pytest.raises(DataError, match=r"fake\.parquet: cannot be read as parquet"):
        load_table([fake], ["prompt", "response"])
    folder = tmp_path / "data"
    (folder / ".ipynb_checkpoints").mkdir(parents=True)
    (folder / ".git").mkdir()
    good = write_parquet(folder / "good.parquet", [{"prompt": "问", "response": "答"}])
    shutil.copy(good, folder / ".ipynb_checkpoints" / "good-checkpoint.parquet")
    (folder / ".git" / "rows.jsonl").write_text('{"prompt": "x", "response": "y"}\n', encoding="utf-8")
    assert resolve_files([str(folder)], "train_files") == [good]


# 7 ------------------------------------------------------------------------------------------------------------
def test_7_dpo_data_resumes_after_a_half_written_last_line(trained_model_dir, tmp_path):
    from sccl_hf.stages.dpo_data import DPODataArguments
    from sccl_hf.stages.dpo_data import main as make_dpo_data

    prompts = [f"{a}加{b}等于多少？" for a in range(3) for b in range(2)]
    reference = write_parquet(
        tmp_path / "reference.parquet", [{"prompt": p, "response": "不同的答案"} for p in prompts]
    )
    output = tmp_path / "dpo.jsonl"
    args = dict(model_name_or_path=str(trained_model_dir), reference_files=[str(reference)], output_file=str(output),
                search_type="greedy", max_new_tokens=8, batch_size=2)  # fmt: skip
    make_dpo_data(DPODataArguments(**args, max_rows=3))
    complete = output.read_text(encoding="utf-8").splitlines()
    assert len(complete) == 3
    output.write_text("\n".join(complete[:2]) + "\n" + complete[2][: len(complete[2]) // 2], encoding="utf-8")
    summary = make_dpo_data(DPODataArguments(**args))  # the crashed run, started again
    assert summary["skipped_already_done"] == 2 and summary["written"] == 4
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in rows] == prompts  # the cut line's prompt was generated again, once


# 8 ------------------------------------------------------------------------------------------------------------
def test_8_a_stage_never_writes_into_its_input_nor_over_a_finished_model(
    trained_model_dir, fixed_rows_file, tmp_path, capsys
):
    before = {p.name: p.stat().st_mtime_ns for p in trained_model_dir.iterdir()}
    with pytest.raises(SystemExit) as exit:
        sft(trained_model_dir, fixed_rows_file, trained_model_dir, 2, "--overwrite_output_dir", "true")
    assert exit.value.code == 2 and "is also model_name_or_path" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in trained_model_dir.iterdir()} == before
    sft(trained_model_dir, fixed_rows_file, tmp_path, 2)
    finished = (tmp_path / "model.safetensors").read_bytes()
    with pytest.raises(SystemExit) as exit:  # (the demo recipe itself says overwrite_output_dir: true)
        sft(trained_model_dir, fixed_rows_file, tmp_path, 3, "--overwrite_output_dir", "false")
    assert exit.value.code == 2 and "holds a finished model" in capsys.readouterr().err
    assert (tmp_path / "model.safetensors").read_bytes() == finished
    sft(trained_model_dir, fixed_rows_file, tmp_path, 3, "--overwrite_output_dir", "true")
    assert json.loads((tmp_path / "results.json").read_text())["results"]["steps"] == 3


# 10 -----------------------------------------------------------------------------------------------------------
def test_10_a_tokenizer_without_the_eos_template_gets_it_and_says_so(tokenizer_dir, fixed_rows_file, tmp_path, caplog):
    plain = tmp_path / "plain_tokenizer"
    shutil.copytree(tokenizer_dir, plain)
    spec = json.loads((plain / "tokenizer.json").read_text(encoding="utf-8"))
    spec["post_processor"] = None  # as ChatLM-mini-Chinese's published tokenizer.json
    (plain / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(plain)("杭州")["input_ids"][-1] != 1  # the fault is real
    with caplog.at_level(logging.WARNING):
        run_recipe(DEMO / "pretrain.yaml", ["--preset", "tiny", "--tokenizer_dir", str(plain), "--train_files",
                                            str(fixed_rows_file), *quick(tmp_path / "model", 2)])  # fmt: skip
    assert "did not end its encodings with [EOS]; the [EOS] template is installed" in caplog.text
    saved = AutoTokenizer.from_pretrained(tmp_path / "model")  # saved with the template: a user gets it too
    assert saved("杭州")["input_ids"][-1] == saved.eos_token_id == 1


# 11 -----------------------------------------------------------------------------------------------------------
def test_11_convert_turns_a_chatlm_folder_into_a_self_contained_one(tokenizer_dir, tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    source = tmp_path / "chatlm"
    source.mkdir()
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=600, d_model=64, d_ff=128, num_heads=2, d_kv=32, num_layers=2,
                                             pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))  # fmt: skip
    t5.save_pretrained(source)
    config = json.loads((source / "config.json").read_text())
    config.update(architectures=["TextToTextModel"], max_seq_len=48)  # ChatLM's layout: no auto_map
    config.pop("auto_map", None)
    (source / "config.json").write_text(json.dumps(config))
    spec = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    spec["post_processor"], spec["truncation"] = None, {"max_length": 8, "strategy": "LongestFirst", "stride": 0,
                                                          "direction": "Right"}  # fmt: skip
    (source / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    (source / "modeling_chat_model.py").write_text("raise ImportError('ChatLM remote code')\n")
    target = tmp_path / "ours"
    result = subprocess.run([sys.executable, "-c", "from sccl_hf.cli import main; main()", "convert", str(source),
                             str(target)], capture_output=True, text=True, timeout=180)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    check = f"""
import json, sys, torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, T5ForConditionalGeneration
ours = AutoModelForSeq2SeqLM.from_pretrained({str(target)!r}, trust_remote_code=True).eval()
theirs = T5ForConditionalGeneration.from_pretrained({str(source)!r}).eval()
tokenizer = AutoTokenizer.from_pretrained({str(target)!r})
batch = tokenizer(["浙江的省会是哪里？"], return_tensors="pt")
labels = tokenizer(["杭州"], return_tensors="pt")["input_ids"]
with torch.no_grad():
    same = torch.equal(ours(**batch, labels=labels).logits, theirs(**batch, labels=labels).logits)
out = ours.my_generate(batch["input_ids"], batch["attention_mask"], max_seq_len=4, search_type="greedy")
print(json.dumps({{"same": same, "eos_last": batch["input_ids"][0, -1].item(), "max_seq_len": ours.config.max_seq_len,
                  "sccl_hf": "sccl_hf" in sys.modules, "start": out[0, 0].item()}}))
"""
    loaded = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    facts = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert facts == {"same": True, "eos_last": 1, "max_seq_len": 48, "sccl_hf": False, "start": 0}
    generation = json.loads((target / "generation_config.json").read_text())
    assert (generation["eos_token_id"], generation["pad_token_id"]) == (1, 0)
    assert json.loads((target / "config.json").read_text())["auto_map"]
    assert json.loads((target / "tokenizer.json").read_text())["truncation"] is None


# 12 -----------------------------------------------------------------------------------------------------------
def test_12_saved_folders_carry_no_training_leftovers(trained_model_dir, fixed_rows_file, tmp_path):
    sft(trained_model_dir, fixed_rows_file, tmp_path, 2)
    for folder in (trained_model_dir, tmp_path):
        spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        assert spec["truncation"] is None and spec["padding"] is None, folder
        assert json.loads((folder / "config.json").read_text())["use_cache"] is True, folder
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
        assert "max_length" not in tokenizer_config and tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"


# 13 -----------------------------------------------------------------------------------------------------------
def test_13_saved_folders_load_and_generate_under_transformers_4_57():
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check_transformers4.sh")],
        env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "transformers 4.57" in result.stdout and "loads and generates" in result.stdout


# 14 -----------------------------------------------------------------------------------------------------------
PAIRS = [
    {"prompt": "浙江的省会是哪里？", "chosen": "杭州", "rejected": "南京市"},
    {"prompt": "大的反义词是什么？", "chosen": "小", "rejected": "高"},
    {"prompt": "3加5等于多少？", "chosen": "八", "rejected": "九十九"},
    {"prompt": "三十七写成数字。", "chosen": "37", "rejected": "73"},
]


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
def test_14_dpo_log_probs_and_loss_equal_an_independent_computation(loss_type, lora, tiny_model_dir, tmp_path):
    import datasets
    from peft import LoraConfig, TaskType
    from trl import DPOConfig

    from sccl_hf.scoring import score_responses
    from sccl_hf.seq2seq_dpo import Seq2SeqDPOTrainer

    torch.manual_seed(0)
    model, tokenizer = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    beta = 0.1
    args = DPOConfig(output_dir=str(tmp_path), loss_type=[loss_type], beta=beta, max_steps=2, learning_rate=1e-2,
                     per_device_train_batch_size=4, report_to="none", use_cpu=True, save_strategy="no",
                     logging_steps=1, disable_tqdm=True)  # fmt: skip
    peft = LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=4, lora_alpha=8, target_modules=["q", "v"]) if lora else None
    trainer = Seq2SeqDPOTrainer(model, ref_model=None if lora else copy.deepcopy(model).eval(), args=args,
                                processing_class=tokenizer, train_dataset=datasets.Dataset.from_list(PAIRS),
                                peft_config=peft, max_seq_len=32)  # fmt: skip
    trainer.train()  # two optimisation steps: the policy no longer equals the reference

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    trainer.model.eval()
    trainer._metrics["eval"].clear()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()
    logged = {key: values[-1] for key, values in trainer._metrics["eval"].items()}

    # Independently: plain forward passes of the policy and the reference, summed over each response's tokens.
    prompts = [p["prompt"] for p in PAIRS]

    def scores(module, column):
        return torch.tensor(
            [s.log_prob for s in score_responses(module, tokenizer, prompts, [p[column] for p in PAIRS])]
        )

    policy = trainer.model
    policy_chosen, policy_rejected = scores(policy, "chosen"), scores(policy, "rejected")
    if lora:
        with policy.disable_adapter():
            ref_chosen, ref_rejected = scores(policy, "chosen"), scores(policy, "rejected")
    else:
        ref_chosen, ref_rejected = scores(trainer.ref_model, "chosen"), scores(trainer.ref_model, "rejected")
    assert (policy_chosen - ref_chosen).abs().max() > 1e-3  # the step moved the policy away from the reference
    delta = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    if loss_type == "sigmoid":
        expected = -torch.nn.functional.logsigmoid(beta * delta).mean()
    elif loss_type == "hinge":
        expected = torch.relu(1 - beta * delta).mean()
    else:  # TRL's IPO averages each log-ratio over the response's tokens ([EOS] included)
        lengths = {c: torch.tensor([len(tokenizer(p[c])["input_ids"]) for p in PAIRS]) for c in ("chosen", "rejected")}
        ipo = (policy_chosen - ref_chosen) / lengths["chosen"] - (policy_rejected - ref_rejected) / lengths["rejected"]
        expected = ((ipo - 1 / (2 * beta)) ** 2).mean()
    assert logged["logps/chosen"] == pytest.approx(policy_chosen.mean().item(), abs=1e-3)
    assert logged["logps/rejected"] == pytest.approx(policy_rejected.mean().item(), abs=1e-3)
    assert logged["rewards/margins"] == pytest.approx(beta * delta.mean().item(), abs=1e-4)
    assert loss == pytest.approx(expected.item(), rel=1e-4, abs=1e-5)
    assert math.isfinite(loss)
