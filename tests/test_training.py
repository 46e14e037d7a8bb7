import csv
import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, accelerate_launch, quick, run_sft
from sccl_hf.model import load_model
from sccl_hf.stages import run_recipe

pytestmark = pytest.mark.slow  # training runs, real processes and servers

DEMO = ROOT / "recipes" / "demo"


def logged(output_dir, key="loss") -> list[tuple[int, float]]:
    with open(output_dir / "training_log.csv") as f:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]


@pytest.fixture(scope="module")
def fixed_batch(fixed_rows_file):
    return fixed_rows_file


@pytest.fixture(scope="module")
def pretrained_dir(trained_model_dir):
    return trained_model_dir


def test_pretraining_lowers_the_loss_on_a_fixed_batch(pretrained_dir):
    losses = [loss for _, loss in logged(pretrained_dir)]
    assert len(losses) == 30
    assert losses[-1] < 0.5 * losses[0]
    assert (pretrained_dir / "training_log.png").stat().st_size > 1000
    assert (pretrained_dir / "modeling_chat_model.py").is_file()


def test_sft_lowers_the_loss_and_freezing_keeps_the_encoder(pretrained_dir, fixed_batch, tmp_path):
    before = load_model(pretrained_dir)
    run_sft(
        pretrained_dir, fixed_batch, tmp_path, 15, "--freeze_embeddings_and_encoder", "true", "--learning_rate", "3e-3"
    )
    losses = [loss for _, loss in logged(tmp_path)]
    assert losses[-1] < losses[0]
    after = load_model(tmp_path)
    assert torch.equal(
        before.encoder.block[0].layer[0].SelfAttention.q.weight, after.encoder.block[0].layer[0].SelfAttention.q.weight
    )
    assert torch.equal(before.shared.weight, after.shared.weight)
    assert not torch.equal(
        before.decoder.block[0].layer[0].SelfAttention.q.weight, after.decoder.block[0].layer[0].SelfAttention.q.weight
    )


def test_evaluation_loss_is_logged_with_the_training_loss(pretrained_dir, fixed_batch, demo_data, tmp_path):
    evaluation = ["--eval_files", str(demo_data["held_out"]), "--eval_strategy", "steps", "--eval_steps", "2"]
    run_sft(pretrained_dir, fixed_batch, tmp_path, 4, *evaluation)
    assert [step for step, _ in logged(tmp_path, "eval_loss")] == [2, 4]
    assert len(logged(tmp_path)) == 4


def test_resume_continues_at_the_saved_step_and_the_log_keeps_its_rows(pretrained_dir, fixed_batch, tmp_path):
    saving = ["--save_strategy", "steps", "--save_steps", "3"]
    run_sft(pretrained_dir, fixed_batch, tmp_path, 3, *saving)
    assert (tmp_path / "checkpoint-3").is_dir()
    run_sft(pretrained_dir, fixed_batch, tmp_path, 6, *saving, "--resume_from_checkpoint", "true")
    assert [step for step, _ in logged(tmp_path)] == [1, 2, 3, 4, 5, 6]  # rows from before the resume are kept
    state = json.loads((tmp_path / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_a_loadable_checkpoint_and_exits(signum, tokenizer_dir, demo_data, tmp_path):
    command = [
        sys.executable,
        str(ROOT / "recipes" / "run.py"),
        str(DEMO / "pretrain.yaml"),
        "--preset",
        "tiny",
        "--tokenizer_dir",
        str(tokenizer_dir),
        "--train_files",
        str(demo_data["sft"]),
        *quick(tmp_path, 100_000, "--save_strategy", "no"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = tmp_path / "training_log.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 3):
        time.sleep(0.2)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    checkpoints = sorted(tmp_path.glob("checkpoint-*"))
    assert len(checkpoints) == 1, output
    step = int(checkpoints[0].name.split("-")[1])
    assert step >= 2
    model = load_model(checkpoints[0])
    assert model.config.vocab_size > 0
    assert "--resume_from_checkpoint true" in output
    assert not (tmp_path / "model.safetensors").exists()  # no "final" model from an interrupted run


def test_streaming_gives_two_processes_disjoint_shards(tokenizer_dir, tmp_path):
    rows = [{"prompt": f"把{i}写成汉字。", "response": f"{i}"} for i in range(64)]
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), data, row_group_size=8)  # 8 shards
    result = accelerate_launch(
        29517,
        str(ROOT / "tests" / "helpers" / "shard_probe.py"),
        str(data),
        str(tokenizer_dir),
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = [set(json.loads((tmp_path / f"rank{r}.json").read_text())) for r in (0, 1)]
    assert seen[0] and seen[1]
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {r["prompt"] for r in rows}


@pytest.fixture(scope="module")
def sharded_pretrain(demo_data, tmp_path_factory):
    """The demo's pretraining rows in row groups of 48: 12 shards, for two processes and two workers each."""
    import pyarrow.parquet as pq

    path = tmp_path_factory.mktemp("sharded") / "pretrain.parquet"
    pq.write_table(pq.read_table(demo_data["pretrain"]), path, row_group_size=48)
    return path


def streaming_overrides(tokenizer_dir, data, output_dir, *extra) -> list[str]:
    """8 steps of a streamed, length-grouped tiny pretraining with dropout (the random state matters), saving at 4."""
    return ["--preset", "tiny", "--tokenizer_dir", str(tokenizer_dir), "--train_files", str(data),
            "--streaming", "true", "--buffer_size", "40", "--train_sampling_strategy", "group_by_length",
            "--dropout_rate", "0.1", "--save_strategy", "steps", "--save_steps", "4",
            *quick(output_dir, 8), *extra]  # fmt: skip


def resume_from_copy(checkpoint, output_dir):
    """A fresh output_dir holding only `checkpoint`, as an interrupted run leaves it."""
    import shutil

    shutil.copytree(checkpoint, output_dir / checkpoint.name)
    return output_dir


def test_a_stream_resumes_at_its_saved_position_with_the_same_losses(tokenizer_dir, sharded_pretrain, tmp_path, caplog):
    """One process, two data loader workers: the resumed run neither replays the stream nor trains on other
    batches (its losses are the uninterrupted run's, to the bit)."""
    workers = ["--dataloader_num_workers", "2"]
    whole = tmp_path / "whole"
    run_recipe(str(DEMO / "pretrain.yaml"), streaming_overrides(tokenizer_dir, sharded_pretrain, whole, *workers))
    state = json.loads((whole / "checkpoint-4" / "stream_state_0.json").read_text())
    assert (state["step"], state["world_size"], state["num_workers"]) == (4, 1, 2)

    resumed = resume_from_copy(whole / "checkpoint-4", tmp_path / "resumed")
    with caplog.at_level("INFO", logger="sccl_hf.training"):
        run_recipe(str(DEMO / "pretrain.yaml"),
                   streaming_overrides(tokenizer_dir, sharded_pretrain, resumed, *workers, "--resume_from_checkpoint", "true"))  # fmt: skip
    assert "resuming the stream at its saved position (step 4)" in caplog.text
    assert logged(resumed) == logged(whole)[4:]

    assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize(
    ("saved", "problem"),
    [
        (None, "holds no stream position for every process"),
        (
            {"world_size": 1, "num_workers": 2},
            "saved by 1 process(es) with 2 data loader worker(s) each, this run has 1 and 0",
        ),
        (
            {"world_size": 2, "num_workers": 0},
            "saved by 2 process(es) with 0 data loader worker(s) each, this run has 1 and 0",
        ),
        ("cut short", "stream_state_0.json cannot be read"),
    ],
    ids=["no position", "other workers", "other processes", "cut short"],
)
def test_a_stream_without_a_fitting_position_is_replayed_with_a_warning(saved, problem, tmp_path, caplog):
    """The Trainer's replay (slow, but the same batches) when the checkpoint has no position this run can use."""
    from types import SimpleNamespace

    from sccl_hf.training import StreamPositionCallback

    checkpoint = tmp_path / "checkpoint-4"
    checkpoint.mkdir()
    if saved == "cut short":
        (checkpoint / "stream_state_0.json").write_text('{"step": 4, "world_')
    elif saved:
        for rank in range(saved["world_size"]):
            state = {"step": 4, "data_loader": {}, **saved}
            (checkpoint / f"stream_state_{rank}.json").write_text(json.dumps(state))
    args = SimpleNamespace(world_size=1, process_index=0, dataloader_num_workers=0, ignore_data_skip=False)
    with caplog.at_level("WARNING", logger="sccl_hf.training"):
        StreamPositionCallback(load_rng_state=None).prepare_resume(str(checkpoint), args)
    assert problem in caplog.text and "the stream is replayed from its start" in caplog.text
    assert args.ignore_data_skip is False  # the Trainer replays


def test_two_process_streaming_pretrain_saves_a_model_and_resumes_exactly(tokenizer_dir, sharded_pretrain, tmp_path):
    """Launched the way users launch with a preset: sccl run ... --accelerate_config cpu_two_processes; with the
    seed's optimizer (`adafactor_t5`), whose state must come back for the losses to match."""

    def launch(output_dir, *extra):
        command = [sys.executable, "-m", "sccl_hf.cli", "run", str(DEMO / "pretrain.yaml"), "--accelerate_config",
                   "cpu_two_processes", "--main_process_port", "29518", "--optim", "adafactor_t5",
                   *streaming_overrides(tokenizer_dir, sharded_pretrain, output_dir, *extra)]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    whole = tmp_path / "whole"
    assert "launch: cpu_two_processes (2 processes)" in launch(whole).stdout
    vocab_size = load_model(whole).config.vocab_size
    # One writer (process 0 of 2, not two processes that each think they are 0 of 1) ...
    assert [step for step, _ in logged(whole)] == list(range(1, 9))
    # ... logging a per-token mean near ln(vocab) for a new model, not one multiplied by the 2 processes.
    assert logged(whole)[0][1] < 1.5 * math.log(vocab_size)
    assert sorted(p.name for p in (whole / "checkpoint-4").glob("stream_state_*")) == [
        "stream_state_0.json",
        "stream_state_1.json",
    ]

    resumed = resume_from_copy(whole / "checkpoint-4", tmp_path / "resumed")
    result = launch(resumed, "--resume_from_checkpoint", "true")
    assert (result.stdout + result.stderr).count("resuming the stream at its saved position (step 4)") == 2
    assert logged(resumed) == logged(whole)[4:]
    with open(whole / "training_log.csv") as f:
        assert {float(r["learning_rate"]) for r in csv.DictReader(f) if r.get("loss")} == {1e-2}  # the relative step


def test_streaming_without_max_steps_is_an_error(tokenizer_dir, demo_data, tmp_path):
    with pytest.raises(ValueError, match="streaming: true needs max_steps"):
        run_recipe(
            str(DEMO / "pretrain.yaml"),
            [
                "--tokenizer_dir",
                str(tokenizer_dir),
                "--train_files",
                str(demo_data["pretrain"]),
                "--streaming",
                "true",
                "--output_dir",
                str(tmp_path),
            ],
        )


def test_a_few_steps_on_real_chatlm_pretraining_data(shared_data, tmp_path):
    from sccl_hf.stages.tokenizer import TokenizerArguments, main

    data = shared_data / "pretrain" / "chatlm_train_3k.parquet"
    main(TokenizerArguments(files=[str(data)], vocab_size=4000, output_dir=str(tmp_path / "tok")))
    run_recipe(
        str(DEMO / "pretrain.yaml"),
        [
            "--preset",
            "tiny",
            "--tokenizer_dir",
            str(tmp_path / "tok"),
            "--train_files",
            str(data),
            "--streaming",
            "true",
            "--max_seq_len",
            "128",
            *quick(tmp_path / "model", 5),
        ],
    )
    losses = [loss for _, loss in logged(tmp_path / "model")]
    assert len(losses) == 5 and all(0 < loss < 20 for loss in losses)
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_training_runs_without_the_decoder_cache_and_saves_it_on(tokenizer_dir, fixed_rows_file, tmp_path):
    """The Trainer's `use_cache: false` reaches T5's encoder and decoder config copies (a new model's decoder
    would otherwise train with its cache on), and the saved config turns it back on for generation."""
    from transformers import Seq2SeqTrainingArguments, TrainerCallback

    from sccl_hf.model import build_config, load_tokenizer, new_model
    from sccl_hf.recipes import DataArguments
    from sccl_hf.tables import load_seq2seq_splits
    from sccl_hf.training import build_seq2seq_trainer, save_trained, train

    seen = []

    class Record(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            seen.append((model.decoder.config.use_cache, model.encoder.config.use_cache))

    tokenizer = load_tokenizer(tokenizer_dir)
    model = new_model(build_config("tiny", tokenizer, max_seq_len=32))
    assert model.decoder.config.use_cache is True  # as built
    data = DataArguments(train_files=[str(fixed_rows_file)])
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path), max_steps=2, report_to="none", use_cpu=True,
                                    per_device_train_batch_size=4, disable_tqdm=True, save_strategy="no")  # fmt: skip
    train_dataset, _ = load_seq2seq_splits(data, tokenizer, 32, args)
    trainer = build_seq2seq_trainer(model, tokenizer, train_dataset, None, args)
    trainer.add_callback(Record())
    save_trained(trainer, args, tokenizer, train(trainer, args))
    assert seen == [(False, False), (False, False)]
    assert json.loads((tmp_path / "config.json").read_text())["use_cache"] is True


def test_a_token_budget_trains_on_batches_of_varying_size(tokenizer_dir, sharded_pretrain, tmp_path):
    overrides = streaming_overrides(tokenizer_dir, sharded_pretrain, tmp_path, "--max_tokens_per_batch", "160")
    results = run_recipe(str(DEMO / "pretrain.yaml"), [*overrides, "--save_strategy", "no"])
    assert [step for step, _ in logged(tmp_path)] == list(range(1, 9))
    assert results["rows_seen"] is None  # batches vary: not counted as steps x rows
    assert results["prompt_tokens_seen"] > 0
    recipe = (tmp_path / "recipe.yaml").read_text()
    assert "max_tokens_per_batch: 160" in recipe and "per_device_train_batch_size: 4" in recipe


def test_a_run_with_a_mismatched_tokenizer_warns_at_its_first_logged_step(
    pretrained_dir, fixed_batch, demo_data, tmp_path, caplog
):
    """SFT on the rows its model was trained on starts near that model's final loss: no warning. The same run with
    a tokenizer from another run (other merges, so other ids) starts far above it: a warning at the first logged
    step that names the likely causes. A new model is held to a uniform guess, ln(vocabulary size)."""
    from sccl_hf.stages.tokenizer import TokenizerArguments
    from sccl_hf.stages.tokenizer import main as train_tokenizer

    other = tmp_path / "other_tokenizer"
    train_tokenizer(TokenizerArguments(files=[str(demo_data["sft"])], vocab_size=700, output_dir=str(other)))
    parent = json.loads((pretrained_dir / "results.json").read_text())["results"]["final_loss"]
    run_sft(pretrained_dir, fixed_batch, tmp_path / "matched", 2)
    assert "the first logged loss" not in caplog.text
    run_sft(pretrained_dir, fixed_batch, tmp_path / "mismatched", 2, "--tokenizer_dir", str(other))
    first = logged(tmp_path / "mismatched")[0][1]
    assert first > parent + 2.0  # the premise: ids from another vocabulary
    assert "the first logged loss" in caplog.text and "tokenizer and the model come from different runs" in caplog.text
    caplog.clear()
    # a parent trained on another task (start_near_parent_loss: false): held to a new model's yardstick instead
    run_sft(pretrained_dir, fixed_batch, tmp_path / "other_task", 2, "--tokenizer_dir", str(other),
            "--start_near_parent_loss", "false")  # fmt: skip
    assert logged(tmp_path / "other_task")[0][1] == pytest.approx(first)
    assert "the first logged loss" not in caplog.text
    # a new model: the yardstick is a uniform guess, ln(700) = 6.55
    from types import SimpleNamespace

    from sccl_hf.training import StartingLossCallback

    for loss, warns in ((6.9, False), (9.0, True)):
        StartingLossCallback(700).on_log(None, SimpleNamespace(global_step=1), None, logs={"loss": loss})
        assert ("a new model starts near ln(vocabulary size) = 6.55" in caplog.text) == warns
