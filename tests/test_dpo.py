import copy
import json
import math
import shutil

import pytest
import torch
from trl import DPOConfig

from conftest import ROOT, quick, write_parquet
from sccl_hf.engine import Engine
from sccl_hf.model import load_model, load_tokenizer
from sccl_hf.seq2seq_dpo import Seq2SeqDPOTrainer
from sccl_hf.stages import run_recipe
from sccl_hf.stages.dpo_data import DPODataArguments
from sccl_hf.stages.dpo_data import main as make_dpo_data
from sccl_hf.stages.merge_lora import merge

pytestmark = pytest.mark.slow  # training runs, real processes and servers

DEMO = ROOT / "recipes" / "demo"
PAIRS = [
    {"prompt": "浙江的省会是哪里？", "chosen": "杭州", "rejected": "南京"},
    {"prompt": "大的反义词是什么？", "chosen": "小", "rejected": "高"},
    {"prompt": "3加5等于多少？", "chosen": "8", "rejected": "9"},
    {"prompt": "三十七写成数字。", "chosen": "37", "rejected": "73"},
]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    return write_parquet(tmp_path_factory.mktemp("pairs") / "pairs.parquet", PAIRS)


def logged(output_dir) -> list[dict]:
    import csv

    with open(output_dir / "training_log.csv") as f:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]


PLAIN_DPO = ["--loss_type", "sigmoid", "--loss_weights", "1.0"]  # the demo recipe adds an SFT term


def dpo_args(output_dir, steps, *extra):
    return quick(output_dir, steps, "--save_strategy", "no", *extra)


def step_zero_loss(model_dir, loss_type, beta=0.1) -> float:
    import datasets

    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    args = DPOConfig(output_dir="unused", loss_type=[loss_type], beta=beta, bf16=False, report_to="none", use_cpu=True)
    trainer = Seq2SeqDPOTrainer(
        model,
        ref_model=copy.deepcopy(model),
        args=args,
        processing_class=tokenizer,
        train_dataset=datasets.Dataset.from_list(PAIRS),
        max_seq_len=32,
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    trainer.model.eval()  # no dropout: policy and reference give identical log-probs
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch).item()


@pytest.mark.parametrize(
    ("loss_type", "expected"), [("sigmoid", math.log(2)), ("hinge", 1.0), ("ipo", (1 / (2 * 0.1)) ** 2)]
)
def test_loss_at_step_zero_with_policy_equal_to_reference(tiny_model_dir, loss_type, expected):
    assert step_zero_loss(tiny_model_dir, loss_type) == pytest.approx(expected, abs=1e-4)


def test_full_dpo_raises_reward_margin_and_accuracy_on_a_fixed_batch(tiny_model_dir, pairs_file, tmp_path):
    results = run_recipe(
        str(DEMO / "dpo.yaml"),
        [
            "--model_name_or_path",
            str(tiny_model_dir),
            "--train_files",
            str(pairs_file),
            "--eval_files",  # the same pairs as "held out": the final model prefers every chosen answer
            str(pairs_file),
            *PLAIN_DPO,
            *dpo_args(tmp_path, 15, "--learning_rate", "5e-3", "--warmup_steps", "0"),
        ],
    )
    rows = [row for row in logged(tmp_path) if "loss" in row]  # training steps (the last row: the held-out pairs)
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert rows[-1]["rewards/margins"] > rows[0]["rewards/margins"] + 0.1
    assert rows[-1]["rewards/accuracies"] == 1.0 and rows[0]["rewards/accuracies"] < 1.0
    assert results["held_out_reward_accuracy"] == 1.0 and results["held_out_reward_margin"] > 0.1
    assert results["held_out_rows"] == results["train_rows"]
    # the figures are the final evaluation's, which the Trainer logged after the last training step
    evaluated = [row for row in logged(tmp_path) if "eval_rewards/margins" in row]
    assert len(evaluated) == 1 and results["held_out_reward_margin"] == pytest.approx(
        evaluated[0]["eval_rewards/margins"]
    )
    assert (tmp_path / "modeling_chat_model.py").is_file() and load_model(tmp_path).config.vocab_size > 0


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, pairs_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora")
    run_recipe(
        str(DEMO / "dpo_lora.yaml"),
        [
            "--model_name_or_path",
            str(tiny_model_dir),
            "--train_files",
            str(pairs_file),
            *dpo_args(out, 10, "--learning_rate", "1e-2", "--warmup_steps", "0"),
        ],
    )
    return out


def test_lora_training_changes_only_adapter_weights(tiny_model_dir, lora_run):
    from peft import PeftModel
    from safetensors.torch import load_file

    adapter = load_file(lora_run / "adapter_model.safetensors")
    assert adapter and all("lora_" in name for name in adapter)
    assert any("lora_B" in name and tensor.abs().sum() > 0 for name, tensor in adapter.items())  # B starts at zero
    base = load_model(tiny_model_dir)
    peft_model = PeftModel.from_pretrained(load_model(tiny_model_dir), lora_run)
    for name, parameter in peft_model.get_base_model().named_parameters():
        if "lora_" not in name:
            original = base.get_parameter(name.replace(".base_layer", ""))
            assert torch.equal(parameter, original), name
    rows = logged(lora_run)
    assert rows[-1]["rewards/margins"] > rows[0]["rewards/margins"]


def test_merged_model_equals_the_adapter_model(tiny_model_dir, lora_run, tmp_path):
    from peft import PeftModel

    tokenizer = load_tokenizer(tiny_model_dir)
    batch = tokenizer([p["prompt"] for p in PAIRS], padding=True, return_tensors="pt")
    labels = tokenizer([p["chosen"] for p in PAIRS], padding=True, return_tensors="pt")["input_ids"]
    adapter_model = PeftModel.from_pretrained(load_model(tiny_model_dir), lora_run).eval()
    run_recipe(str(DEMO / "merge_lora.yaml"), ["--adapter_dir", str(lora_run), "--output_dir", str(tmp_path)])
    merged = load_model(tmp_path).eval()
    with torch.no_grad():
        expected = adapter_model(**batch, labels=labels).logits
        actual = merged(**batch, labels=labels).logits
    assert torch.allclose(expected, actual, atol=1e-4)
    assert not torch.allclose(load_model(tiny_model_dir).eval()(**batch, labels=labels).logits, actual, atol=1e-4)
    assert {"modeling_chat_model.py", "tokenizer.json", "generation_config.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
    assert merge(lora_run, tiny_model_dir).__class__.__name__ == "TextToTextModel"


@pytest.mark.parametrize("recipe", ["dpo.yaml", "dpo_lora.yaml"])
def test_dpo_resume_continues_at_the_saved_step(recipe, tiny_model_dir, pairs_file, tmp_path):
    args = ["--model_name_or_path", str(tiny_model_dir), "--train_files", str(pairs_file)]
    saving = ["--save_strategy", "steps", "--save_steps", "2"]
    run_recipe(str(DEMO / recipe), [*args, *dpo_args(tmp_path, 2), *saving])
    assert (tmp_path / "checkpoint-2").is_dir()
    run_recipe(str(DEMO / recipe), [*args, *dpo_args(tmp_path, 4), *saving, "--resume_from_checkpoint", "true"])
    assert [int(r["step"]) for r in logged(tmp_path)] == [1, 2, 3, 4]  # rows from before the resume are kept
    assert json.loads((tmp_path / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4


def test_precomputed_reference_log_probs(tiny_model_dir, pairs_file, tmp_path):
    run_recipe(
        str(DEMO / "dpo.yaml"),
        [
            "--model_name_or_path",
            str(tiny_model_dir),
            "--train_files",
            str(pairs_file),
            "--precompute_ref_log_probs",
            "true",
            *PLAIN_DPO,
            *dpo_args(tmp_path, 3),
        ],
    )
    rows = logged(tmp_path)
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-3) and len(rows) == 3


def test_a_few_steps_on_real_chinese_preference_data(shared_data, tmp_path):
    from sccl_hf.model import build_config, new_model, save_model_dir
    from sccl_hf.stages.tokenizer import TokenizerArguments
    from sccl_hf.stages.tokenizer import main as train_tokenizer

    data = shared_data / "dpo" / "dpo_zh_real_766.parquet"
    train_tokenizer(
        TokenizerArguments(
            files=[str(data)],
            text_columns=["prompt", "chosen", "rejected"],
            vocab_size=3000,
            output_dir=str(tmp_path / "tok"),
        )
    )
    tokenizer = load_tokenizer(tmp_path / "tok")
    model_dir = save_model_dir(
        new_model(build_config("tiny", tokenizer, max_seq_len=64)), tokenizer, tmp_path / "model"
    )
    run_recipe(
        str(DEMO / "dpo.yaml"),
        [
            "--model_name_or_path",
            str(model_dir),
            "--train_files",
            str(data),
            "--max_seq_len",
            "64",
            *dpo_args(tmp_path / "dpo", 3),
        ],
    )
    rows = logged(tmp_path / "dpo")
    assert len(rows) == 3 and all(math.isfinite(r["loss"]) for r in rows)
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen"} <= set(
        rows[0]
    )


def test_dpo_data_drops_answers_equal_to_the_reference_and_resumes(trained_model_dir, tmp_path):
    engine = Engine(load_model(trained_model_dir), load_tokenizer(trained_model_dir))
    prompts = [f"{a}加{b}等于多少？" for a in range(4) for b in range(3)]
    own = engine.generate(prompts[:3], search_type="greedy", max_new_tokens=8)
    # The first three references are the model's own greedy answers: nothing to learn there, so they are dropped.
    rows = [{"prompt": p, "response": own[i] if i < 3 else "一个不同的答案"} for i, p in enumerate(prompts)]
    reference = write_parquet(tmp_path / "reference.parquet", rows)
    output = tmp_path / "dpo.jsonl"
    assert all(own), own
    args = dict(
        model_name_or_path=str(trained_model_dir),
        reference_files=[str(reference)],
        output_file=str(output),
        search_type="greedy",
        max_new_tokens=8,
        batch_size=4,
    )
    first = make_dpo_data(DPODataArguments(**args, max_rows=6))
    assert first == {"written": 3, "dropped_equal_to_reference": 3, "skipped_already_done": 0}
    second = make_dpo_data(DPODataArguments(**args))  # an interrupted run, started again
    assert second == {"written": 6, "dropped_equal_to_reference": 0, "skipped_already_done": 6}
    written = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in written] == prompts[3:]
    assert all(r["chosen"] == "一个不同的答案" and r["rejected"] for r in written)
    # Other weights (a retrained SFT model): the earlier answers are moved aside, not reused, and all is redone.
    other = tmp_path / "other_model"
    shutil.copytree(trained_model_dir, other)
    model = load_model(other)
    with torch.no_grad():
        model.lm_head.weight.mul_(1.01)
    model.save_pretrained(other)
    third = make_dpo_data(DPODataArguments(**{**args, "model_name_or_path": str(other)}))
    assert third["skipped_already_done"] == 0 and third["written"] + third["dropped_equal_to_reference"] == 12
    pairs_aside = [p for p in tmp_path.glob("dpo.*.jsonl") if not p.name.startswith("dpo.dropped")]
    dropped_aside = [p for p in tmp_path.glob("dpo.dropped.*.jsonl")]
    assert len(pairs_aside) == len(dropped_aside) == 1
    assert len(pairs_aside[0].read_text().splitlines()) == 9 and len(dropped_aside[0].read_text().splitlines()) == 3
    # Other search settings, the same weights (greedy -> sampling): not reused either (a recipe changed to
    # sampling once trained DPO on the greedy answers of the run before).
    fourth = make_dpo_data(DPODataArguments(**{**args, "model_name_or_path": str(other), "search_type": "sampling"}))
    assert fourth["skipped_already_done"] == 0 and fourth["written"] + fourth["dropped_equal_to_reference"] == 12
    assert len([p for p in tmp_path.glob("dpo.*.jsonl") if not p.name.startswith("dpo.dropped")]) == 2


def test_a_bf16_dpo_run_leaves_autocast_as_it_found_it(tiny_model_dir, pairs_file, tmp_path):
    """bf16 with gradient checkpointing (TRL's defaults) left CPU autocast on after training: what ran next in the
    process computed in bf16. The stage restores it."""
    import torch

    args = ["--model_name_or_path", str(tiny_model_dir), "--train_files", str(pairs_file)]
    run_recipe(
        str(DEMO / "dpo.yaml"), [*args, *dpo_args(tmp_path, 2), "--bf16", "true", "--gradient_checkpointing", "true"]
    )
    assert not torch.is_autocast_enabled("cpu")
