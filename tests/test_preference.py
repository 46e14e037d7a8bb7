"""`stage: preference` (ORPO, SimPO, CPO on TRL's experimental trainers): the batch the trainer builds, each loss
against a hand computation from log-probabilities the model's own seq2seq loss gives, and a whole run that saves,
loads and resumes."""

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, quick, write_parquet
from sccl_hf.model import load_model, load_tokenizer
from sccl_hf.seq2seq_preference import PreferenceConfig, trainer_class
from sccl_hf.stages import run_recipe

DEMO = ROOT / "recipes" / "demo"
PAIRS = [
    {"prompt": "浙江的省会是哪里？", "chosen": "杭州", "rejected": "南京"},
    {"prompt": "大的反义词是什么？请用一个字回答，不要解释，也不要写别的内容。", "chosen": "小", "rejected": "高兴"},
    {"prompt": "3加5等于多少？", "chosen": "8", "rejected": "九"},
    {"prompt": "三十七写成数字。", "chosen": "37", "rejected": "七十三"},
]
MAX_SEQ_LEN = 12  # PAIRS[1]'s prompt is longer: it must be cut


def make_trainer(model_dir, loss: str, **settings):
    import datasets

    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    args = PreferenceConfig(output_dir="unused", loss=loss, bf16=False, report_to="none", use_cpu=True,
                            max_completion_length=MAX_SEQ_LEN, **settings)  # fmt: skip
    trainer = trainer_class(loss)(model, args=args, processing_class=tokenizer,
                                  train_dataset=datasets.Dataset.from_list(PAIRS), max_seq_len=MAX_SEQ_LEN)  # fmt: skip
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    trainer.model.eval()  # no dropout: the oracle's forward must see the same model
    return trainer, batch, tokenizer


def oracle_log_probs(model, tokenizer, answer_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-prob, tokens) of each row's answer: -model(input_ids, labels).loss x tokens, the model's own
    shift-and-cross-entropy, one row at a time."""
    sums, counts = [], []
    for row in PAIRS:
        prompt = tokenizer(row["prompt"], truncation=True, max_length=MAX_SEQ_LEN, return_tensors="pt")
        labels = tokenizer(row[answer_key], truncation=True, max_length=MAX_SEQ_LEN, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            loss = model(**prompt, labels=labels).loss
        sums.append(-loss * labels.shape[1])
        counts.append(labels.shape[1])
    return torch.stack(sums), torch.tensor(counts, dtype=torch.float)


@pytest.mark.parametrize("loss", ["orpo", "simpo", "cpo"])
def test_the_batch_decoder_inputs_start_with_pad_labels_end_in_eos_and_prompts_are_cut(tiny_model_dir, loss):
    trainer, batch, tokenizer = make_trainer(tiny_model_dir, loss)
    prompts = batch["prompt_input_ids"]
    assert prompts.shape[1] == MAX_SEQ_LEN  # PAIRS[1] cut, not passed whole to the encoder
    assert prompts[1, -1] == tokenizer.eos_token_id
    for key in ("chosen_labels", "rejected_labels"):
        labels = batch[key]
        decoder_inputs = trainer._shift_right(labels)
        assert tokenizer.pad_token_id == 0 and (decoder_inputs[:, 0] == 0).all()
        for row in labels:
            assert row[row != -100][-1] == tokenizer.eos_token_id == 1


@pytest.mark.parametrize(("loss", "mean"), [("orpo", True), ("simpo", True), ("cpo", False)])
def test_row_log_probs_equal_the_models_own_loss(tiny_model_dir, loss, mean):
    trainer, batch, tokenizer = make_trainer(tiny_model_dir, loss)
    with torch.no_grad():
        chosen, rejected = trainer.concatenated_forward(trainer.model, batch)[:2]
    for answers, key in ((chosen, "chosen"), (rejected, "rejected")):
        sums, counts = oracle_log_probs(trainer.model, tokenizer, key)
        expected = sums / counts if mean else sums
        assert torch.allclose(answers, expected, atol=1e-4), (key, answers, expected)


def nll_of_chosen(model, tokenizer) -> torch.Tensor:
    """The chosen answers' cross-entropy, averaged over all their tokens in the batch (TRL pools the tokens)."""
    sums, counts = oracle_log_probs(model, tokenizer, "chosen")
    return -sums.sum() / counts.sum()


def test_orpo_loss_is_nll_plus_lambda_times_the_log_odds_ratio_term(tiny_model_dir):
    trainer, batch, tokenizer = make_trainer(tiny_model_dir, "orpo", beta=0.25)
    with torch.no_grad():
        loss, metrics = trainer.get_batch_loss_metrics(trainer.model, batch)
    chosen_sum, counts = oracle_log_probs(trainer.model, tokenizer, "chosen")
    rejected_sum, rejected_counts = oracle_log_probs(trainer.model, tokenizer, "rejected")
    chosen, rejected = chosen_sum / counts, rejected_sum / rejected_counts
    # Hong et al. 2024, eq. 6-7: log odds(y) = log p - log(1 - p), p the length-normalised likelihood
    log_odds = (chosen - torch.log1p(-chosen.exp())) - (rejected - torch.log1p(-rejected.exp()))
    expected = nll_of_chosen(trainer.model, tokenizer) - 0.25 * F.logsigmoid(log_odds).mean()
    assert math.isclose(loss.item(), expected.item(), rel_tol=1e-4)
    assert math.isclose(metrics["log_odds_ratio"], F.logsigmoid(log_odds).mean().item(), rel_tol=1e-4)


def test_simpo_loss_is_the_length_normalised_margin_minus_gamma(tiny_model_dir):
    trainer, batch, tokenizer = make_trainer(tiny_model_dir, "simpo", beta=2.0, simpo_gamma=1.0)
    assert trainer.cpo_alpha == 0.0  # pure SimPO unless a recipe asks for the NLL term
    with torch.no_grad():
        loss, _ = trainer.get_batch_loss_metrics(trainer.model, batch)
    chosen_sum, counts = oracle_log_probs(trainer.model, tokenizer, "chosen")
    rejected_sum, rejected_counts = oracle_log_probs(trainer.model, tokenizer, "rejected")
    # Meng et al. 2024, eq. 6: -log sigmoid(beta/|yw| log p(yw) - beta/|yl| log p(yl) - gamma)
    expected = -F.logsigmoid(2.0 * chosen_sum / counts - 2.0 * rejected_sum / rejected_counts - 1.0).mean()
    assert math.isclose(loss.item(), expected.item(), rel_tol=1e-4)


def test_cpo_loss_is_the_summed_margin_plus_alpha_times_nll(tiny_model_dir):
    trainer, batch, tokenizer = make_trainer(tiny_model_dir, "cpo", beta=0.1)
    with torch.no_grad():
        loss, _ = trainer.get_batch_loss_metrics(trainer.model, batch)
    chosen_sum, _ = oracle_log_probs(trainer.model, tokenizer, "chosen")
    rejected_sum, _ = oracle_log_probs(trainer.model, tokenizer, "rejected")
    expected = -F.logsigmoid(0.1 * (chosen_sum - rejected_sum)).mean() + 1.0 * nll_of_chosen(trainer.model, tokenizer)
    assert math.isclose(loss.item(), expected.item(), rel_tol=1e-4)


def test_an_unknown_loss_names_the_choices():
    with pytest.raises(ValueError, match="loss: must be one of orpo, simpo, cpo, got 'dpo'"):
        PreferenceConfig(output_dir="unused", loss="dpo", report_to="none")


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    return write_parquet(tmp_path_factory.mktemp("pairs") / "pairs.parquet", PAIRS)


def logged_steps(output_dir) -> list[int]:
    import csv

    with open(output_dir / "training_log.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("loss")]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["orpo.yaml", "simpo.yaml"])
def test_a_run_saves_a_model_that_loads_and_resumes(recipe, tiny_model_dir, pairs_file, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    args = ["--model_name_or_path", str(tiny_model_dir), "--train_files", str(pairs_file),
            "--eval_files", str(pairs_file), "--save_strategy", "steps", "--save_steps", "2"]  # fmt: skip
    run_recipe(str(DEMO / recipe), [*args, *quick(tmp_path / "whole", 4)])
    results = json.loads((tmp_path / "whole" / "results.json").read_text())["results"]
    assert results["held_out_rows"] == 4 and results["loss"] == recipe.split(".")[0]
    assert results["peak_rss_mb"] > 100  # the process's own peak: torch and a model at least
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "whole", trust_remote_code=True)
    assert type(model).__name__ == "TextToTextModel"

    shutil.copytree(tmp_path / "whole" / "checkpoint-2", tmp_path / "resumed" / "checkpoint-2")
    run_recipe(str(DEMO / recipe), [*args, *quick(tmp_path / "resumed", 4), "--resume_from_checkpoint", "true"])
    assert logged_steps(tmp_path / "resumed") == [3, 4]
    assert json.loads((tmp_path / "resumed" / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4


def test_rows_with_an_empty_answer_are_left_out_and_named(tiny_model_dir, tmp_path, caplog):
    rows = [
        *PAIRS,
        {"prompt": "你好", "chosen": "", "rejected": "不"},
        {"prompt": "你好", "chosen": "好", "rejected": " "},
    ]
    data = write_parquet(tmp_path / "pairs.parquet", rows)
    with caplog.at_level("WARNING"):
        run_recipe(str(DEMO / "simpo.yaml"), ["--model_name_or_path", str(tiny_model_dir), "--train_files", str(data),
                                              *quick(tmp_path / "out", 1, "--save_strategy", "no")])  # fmt: skip
    assert "1 empty chosen (row 4)" in caplog.text and "1 empty rejected (row 5)" in caplog.text
    assert json.loads((tmp_path / "out" / "results.json").read_text())["results"]["train_rows"] == 4
