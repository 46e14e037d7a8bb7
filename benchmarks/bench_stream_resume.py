"""Resume time of a streamed pretraining run at step 10 and at step 2,000 of the same run: resuming at the saved
stream position (ours) against the Trainer's replay of the stream from its start (the baseline, what a checkpoint
without a saved position gets), in one run.

The run: the `tiny` preset, streamed `sft/sft_mix_44k` (rewritten with row groups of 1,000 rows: 44 shards),
length-grouped windows of 10,000 rows, batches of 16, dropout 0.1, a checkpoint at steps 10 and 2,000, a loss
logged at every step. Each resume starts from a copy of one checkpoint and stops after its first step. Its resume
time is from the start of training (model, optimizer and checkpoint loaded) to the end of that first step; a
resume that found the right batches logs the uninterrupted run's loss for that step, which is checked too.

    python benchmarks/bench_stream_resume.py [--steps 2000] [--early 10] [--work runs/bench/stream_resume]

Prints JSON, then markdown rows. Goal: resuming at step 2,000 within 1.5x of resuming at step 10.
"""

import argparse
import csv
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from transformers import TrainerCallback  # noqa: E402 (after the offline settings)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCCL_SHARED_DATA", ROOT.parent / "shared" / "data"))


def prepare(work: Path) -> tuple[Path, Path]:
    """The data in row groups of 1,000 rows, and a tokenizer trained on it (both kept in `work` for reruns)."""
    import pyarrow.parquet as pq

    from sccl_hf.stages.tokenizer import TokenizerArguments, main

    source = SHARED / "sft" / "sft_mix_44k.parquet"
    data = work / "sft_mix_44k_rg1000.parquet"
    if not data.is_file():
        work.mkdir(parents=True, exist_ok=True)
        pq.write_table(pq.read_table(source, columns=["prompt", "response"]), data, row_group_size=1000)
    tokenizer = work / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        main(TokenizerArguments(files=[str(data)], vocab_size=8000, output_dir=str(tokenizer)))
    return data, tokenizer


class SaveAt(TrainerCallback):
    """Saves a checkpoint at the chosen steps."""

    def __init__(self, steps: set[int]):
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.steps:
            control.should_save = True


class FirstStepTimer(TrainerCallback):
    """Times a resumed run from the start of training to the end of its first step, then stops it."""

    def __init__(self):
        self.begin = self.first_step_end = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.first_step_end = self.first_step_end or time.perf_counter()
        control.should_training_stop = True


def run(data: Path, tokenizer_dir: Path, output_dir: Path, steps: int, callbacks: list, resume: bool) -> None:
    """The pretrain stage's work (sccl_hf.stages.pretrain), with the benchmark's callbacks added."""
    from transformers import set_seed

    from sccl_hf import model as models
    from sccl_hf.recipes import parse_recipe
    from sccl_hf.stages import argument_specs, import_stage
    from sccl_hf.tables import load_seq2seq_splits
    from sccl_hf.training import build_seq2seq_trainer, train

    overrides = ["--preset", "tiny", "--tokenizer_dir", str(tokenizer_dir), "--train_files", str(data),
                 "--streaming", "true", "--buffer_size", "10000", "--train_sampling_strategy", "group_by_length",
                 "--max_seq_len", "128", "--dropout_rate", "0.1", "--max_steps", str(steps + 1),
                 "--per_device_train_batch_size", "16", "--logging_steps", "1", "--disable_tqdm", "true",
                 "--save_strategy", "no", "--output_dir", str(output_dir),
                 "--resume_from_checkpoint", "true" if resume else "false"]  # fmt: skip
    specs = argument_specs(import_stage("pretrain"))
    model_args, data_args, training_args, _ = parse_recipe(
        ROOT / "recipes" / "demo" / "pretrain.yaml", overrides, specs
    )
    set_seed(training_args.seed)
    tokenizer = models.load_tokenizer(str(tokenizer_dir))
    config = models.build_config(model_args.preset, tokenizer, dropout_rate=model_args.dropout_rate)
    max_len = models.training_max_len(config, data_args.max_seq_len)
    train_dataset, _ = load_seq2seq_splits(data_args, tokenizer, max_len, training_args)
    trainer = build_seq2seq_trainer(models.new_model(config), tokenizer, train_dataset, None, training_args, data_args)
    for callback in callbacks:
        trainer.add_callback(callback)
    train(trainer, training_args)


def losses(output_dir: Path) -> dict[int, float]:
    with open(output_dir / "training_log.csv") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f) if r.get("loss")}


def main() -> None:
    import logging

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--early", type=int, default=10)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "stream_resume")
    options = parser.parse_args()
    logging.getLogger("transformers").setLevel(logging.ERROR)

    data, tokenizer_dir = prepare(options.work)
    whole = options.work / "whole"
    shutil.rmtree(whole, ignore_errors=True)
    started = time.perf_counter()
    run(data, tokenizer_dir, whole, options.steps, [SaveAt({options.early, options.steps})], resume=False)
    train_seconds = time.perf_counter() - started
    uninterrupted = losses(whole)

    rows = []
    for step in (options.early, options.steps):
        for method in ("position", "replay"):
            output_dir = options.work / f"resume_{step}_{method}"
            shutil.rmtree(output_dir, ignore_errors=True)
            checkpoint = shutil.copytree(whole / f"checkpoint-{step}", output_dir / f"checkpoint-{step}")
            if method == "replay":  # a checkpoint without a saved position: the Trainer replays the stream
                for path in checkpoint.glob("stream_state_*.json"):
                    path.unlink()
            timer = FirstStepTimer()
            run(data, tokenizer_dir, output_dir, options.steps, [timer], resume=True)
            resumed_loss = losses(output_dir)[step + 1]
            rows.append({
                "step": step,
                "method": method,
                "resume_seconds": round(timer.first_step_end - timer.begin, 2),
                "loss": resumed_loss,
                "uninterrupted_loss": uninterrupted[step + 1],
                "same_loss": resumed_loss == uninterrupted[step + 1],
            })  # fmt: skip

    seconds = {(r["step"], r["method"]): r["resume_seconds"] for r in rows}
    result = {
        "data": "sft/sft_mix_44k (44 row groups)",
        "preset": "tiny",
        "batch_size": 16,
        "steps": options.steps,
        "train_seconds": round(train_seconds, 1),
        "resumes": rows,
        "position_late_over_early": round(
            seconds[(options.steps, "position")] / seconds[(options.early, "position")], 2
        ),
        "replay_late_over_early": round(seconds[(options.steps, "replay")] / seconds[(options.early, "replay")], 2),
        "replay_over_position_late": round(
            seconds[(options.steps, "replay")] / seconds[(options.steps, "position")], 2
        ),
    }
    print(json.dumps(result, indent=2))
    print("| resume at | saved position | replay (Trainer) | same loss as uninterrupted |")
    print("|---|---|---|---|")
    for step in (options.early, options.steps):
        same = all(r["same_loss"] for r in rows if r["step"] == step)
        print(f"| step {step} | {seconds[(step, 'position')]} s | {seconds[(step, 'replay')]} s | {same} |")
    print(
        f"| step {options.steps} / step {options.early} | x{result['position_late_over_early']} | "
        f"x{result['replay_late_over_early']} | |"
    )


if __name__ == "__main__":
    main()
