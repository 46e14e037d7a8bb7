"""`optim: adafactor_t5`: relative-step, parameter-scaled Adafactor (the seed's own trainer's optimizer)."""

import csv
import json
import math

import pytest
import torch

from conftest import run_sft
from sccl_hf.optim import ADAFACTOR_T5_KWARGS, RelativeStepSchedule, relative_step


def hand_update(weight, grad, row, col, step):
    """One factored Adafactor update of a matrix, written from the paper's algorithm (Shazeer & Stern 2018, alg. 4
    with relative steps, parameter scaling, update clipping at 1 and decay -0.8), in float64."""
    beta2 = 1 - step**-0.8
    squared = grad**2 + 1e-30
    row = beta2 * row + (1 - beta2) * squared.mean(dim=1)
    col = beta2 * col + (1 - beta2) * squared.mean(dim=0)
    estimate = torch.outer(row, col) / row.mean()  # the factored second moment
    update = grad / estimate.sqrt()
    update = update / max(1.0, float(update.pow(2).mean().sqrt()))  # clipping at d = 1
    rate = min(1e-2, 1 / math.sqrt(step)) * max(1e-3, float(weight.pow(2).mean().sqrt()))
    return weight - rate * update, row, col


def test_two_updates_equal_a_hand_computation_and_ignore_the_learning_rate():
    from transformers.optimization import Adafactor

    generator = torch.Generator().manual_seed(0)
    start = torch.randn(6, 5, generator=generator, dtype=torch.float64) * 0.3
    grads = [torch.randn(6, 5, generator=generator, dtype=torch.float64) for _ in range(2)]
    weight = torch.nn.Parameter(start.clone())
    optimizer = Adafactor([weight], **ADAFACTOR_T5_KWARGS)
    schedule = RelativeStepSchedule(optimizer)
    expected, row, col = start.clone(), torch.zeros(6, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    reported = []
    for step, grad in enumerate(grads, start=1):
        reported.append(schedule.get_last_lr()[0])
        weight.grad = grad.clone()
        optimizer.step()
        schedule.step()
        expected, row, col = hand_update(expected, grad, row, col, step)
        torch.testing.assert_close(weight.detach(), expected, rtol=1e-12, atol=1e-14)
    assert reported == [1e-2, 1e-2]  # min(1e-2, 1/sqrt(step)) for the first 10,000 steps
    assert optimizer.state[weight]["step"] == 2
    assert optimizer.param_groups[0]["lr"] == 1e-2  # the schedule's report; the optimizer never reads it


def test_the_reported_step_decays_as_one_over_the_square_root_after_10000_steps():
    assert relative_step(1) == relative_step(10_000) == 1e-2
    assert relative_step(40_000) == pytest.approx(5e-3)
    assert relative_step(1_000_000) == pytest.approx(1e-3)


def logged(output_dir, key):
    with open(output_dir / "training_log.csv") as f:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]


@pytest.mark.slow
def test_a_run_with_adafactor_t5_logs_its_step_and_resumes_with_its_state(
    trained_model_dir, fixed_rows_file, tmp_path, caplog
):
    """Through the recipe (`--optim adafactor_t5`): the checkpoint holds transformers' Adafactor in relative mode
    with each matrix's step count; the log's learning_rate is the relative step; a run resumed from step 3 has the
    losses of the run that was not interrupted, to the bit (the second-moment factors came back)."""
    relative = ["--optim", "adafactor_t5", "--save_strategy", "steps", "--save_steps", "3"]
    whole, parted = tmp_path / "whole", tmp_path / "parted"
    with caplog.at_level("WARNING", logger="sccl_hf.optim"):
        run_sft(trained_model_dir, fixed_rows_file, whole, 6, *relative)
    # the demo SFT recipe's learning rate and cosine schedule would be ignored, and the run says so
    assert "learning_rate 0.001, lr_scheduler_type cosine and warmup_steps 20.0 are not used" in caplog.text
    run_sft(trained_model_dir, fixed_rows_file, parted, 3, *relative)
    run_sft(trained_model_dir, fixed_rows_file, parted, 6, *relative, "--resume_from_checkpoint", "true")
    assert logged(parted, "loss") == logged(whole, "loss") and len(logged(whole, "loss")) == 6
    assert logged(whole, "loss")[-1][1] < logged(whole, "loss")[0][1]  # it trains
    assert [rate for _, rate in logged(whole, "learning_rate")] == [1e-2] * 6
    state = torch.load(whole / "checkpoint-6" / "optimizer.pt", weights_only=False)
    group = state["param_groups"][0]
    assert group["relative_step"] and group["scale_parameter"] and not group["warmup_init"]
    assert {int(s["step"]) for s in state["state"].values()} == {6}
    recipe = (whole / "recipe.yaml").read_text()
    assert "optim: adafactor_t5" in recipe, recipe
    assert json.loads((whole / "results.json").read_text())
