"""What every training stage shares: logging, resume, Ctrl+C/SIGTERM handling, loss history, the final save."""

import csv
import logging
import os
import signal
import sys
from pathlib import Path

import datasets
import torch
import transformers
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from sccl_hf.model import copy_remote_code, prepare_for_save

logger = logging.getLogger(__name__)


def setup_logging(training_args) -> None:
    level = training_args.get_process_log_level()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout, level=level)
    for library in (transformers, datasets):
        library.utils.logging.set_verbosity(level)
    logging.getLogger("sccl_hf").setLevel(level if level != logging.WARNING else logging.INFO)


def resolve_resume(training_args) -> str | None:
    """`resume_from_checkpoint: true` means the newest checkpoint in output_dir (none yet: start fresh)."""
    value = training_args.resume_from_checkpoint
    if value in (None, "", "false", "False"):
        return None
    if value in ("true", "True", True):
        last = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
        if last is None:
            logger.info(
                "resume_from_checkpoint: no checkpoint in %s yet, starting from step 0", training_args.output_dir
            )
        return last
    if not os.path.isdir(value):
        raise FileNotFoundError(f"resume_from_checkpoint: no such checkpoint directory: '{value}'")
    return value


class InterruptCallback(TrainerCallback):
    """On Ctrl+C or SIGTERM, finish the current step, save a checkpoint and stop (a second Ctrl+C aborts)."""

    def __init__(self):
        self.signal_received = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signal_received is not None:
            raise KeyboardInterrupt
        self.signal_received = signum
        print(
            f"\n{signal.Signals(signum).name} received: saving a checkpoint after this step",
            file=sys.stderr,
            flush=True,
        )

    def on_train_begin(self, args, state, control, **kwargs):
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def on_step_end(self, args, state, control, **kwargs):
        stop = self.signal_received is not None
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Every process must stop at the same step, or the others would wait forever in the next collective.
            flag = torch.tensor([int(stop)], device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = bool(flag.item())
            if stop and self.signal_received is None:
                self.signal_received = signal.SIGTERM
        if stop:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class LossHistoryCallback(TrainerCallback):
    """Writes every logged number (loss, learning rate, DPO rewards, ...) to output_dir/training_log.csv and
    plots loss and learning rate to training_log.png."""

    def __init__(self, output_dir: str):
        self.csv_path = Path(output_dir) / "training_log.csv"
        self.png_path = Path(output_dir) / "training_log.png"
        self.rows, self.fields = [], ["step"]

    def on_log(self, args, state, control, logs=None, **kwargs):
        # args.process_index, not state.is_world_process_zero: transformers 5.23 leaves the latter True on every
        # process during training, and two processes would write the file.
        if args.process_index != 0 or not logs or "train_loss" in logs:  # also skip the end-of-run summary
            return
        numbers = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
        row = {"step": state.global_step, **numbers}
        self.rows.append(row)
        new_fields = [k for k in numbers if k not in self.fields]
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        if new_fields or len(self.rows) == 1:  # a new column: write the file again with the wider header
            self.fields += new_fields
            with open(self.csv_path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.fields)
                writer.writeheader()
                writer.writerows(self.rows)
        else:
            with open(self.csv_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fields).writerow(row)

    def on_train_end(self, args, state, control, **kwargs):
        if args.process_index == 0 and self.rows:
            plot_history(self.rows, self.png_path)


def plot_history(rows: list[dict], png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, lr_ax) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for key, style in (("loss", "-"), ("eval_loss", "o--")):
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            loss_ax.plot(*zip(*points), style, label=key)
    loss_ax.set_ylabel("loss")
    loss_ax.legend()
    points = [(r["step"], r["learning_rate"]) for r in rows if "learning_rate" in r]
    if points:
        lr_ax.plot(*zip(*points))
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


def training_callbacks(training_args) -> list[TrainerCallback]:
    if training_args.include_num_input_tokens_seen in ("no", False):
        training_args.include_num_input_tokens_seen = "non_padding"  # results.json reports the tokens seen
    return [InterruptCallback(), LossHistoryCallback(training_args.output_dir)]


def train(trainer, training_args):
    """Train (resuming if asked). On Ctrl+C/SIGTERM the checkpoint is already written: exit with 130."""
    result = trainer.train(resume_from_checkpoint=resolve_resume(training_args))
    interrupt = next(c for c in trainer.callback_handler.callbacks if isinstance(c, InterruptCallback))
    if interrupt.signal_received is not None:
        last = get_last_checkpoint(training_args.output_dir)
        print(
            f"stopped at step {trainer.state.global_step}; checkpoint: {last}\n"
            f"continue with --resume_from_checkpoint true",
            file=sys.stderr,
        )
        raise SystemExit(130)
    return result


def save_trained(trainer, training_args, tokenizer, result) -> dict:
    """Save the final self-contained model directory (a LoRA run: its adapter) to output_dir, the Trainer's
    state and metrics beside it, and return the run's results (metrics, rows and tokens seen)."""
    is_adapter = hasattr(trainer.model, "peft_config")  # a LoRA run saves its adapter (see stage merge_lora)
    if not is_adapter:
        prepare_for_save(trainer.model)
    trainer.save_model(training_args.output_dir)  # every process: DeepSpeed ZeRO-3 gathers its shards here
    metrics = dict(result.metrics)
    state = trainer.state
    metrics["num_input_tokens_seen"] = state.num_input_tokens_seen
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(training_args.output_dir)
        if not is_adapter:
            copy_remote_code(training_args.output_dir)
        logger.info("%s saved to %s", "adapter" if is_adapter else "model", training_args.output_dir)
    trainer.accelerator.wait_for_everyone()
    batch_rows = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    return {
        "metrics": metrics,
        "steps": state.global_step,
        "epochs": state.epoch,
        "rows_seen": state.global_step * batch_rows * training_args.world_size,  # full batches; the last may be short
        "prompt_tokens_seen": state.num_input_tokens_seen,  # encoder tokens, padding excluded
        "final_loss": next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None),
        "output_dir": str(training_args.output_dir),
    }


def check_streaming(data_args, training_args) -> None:
    """A streamed dataset has no length: the run is measured in steps, and each process reads its own shards."""
    if not data_args.streaming:
        return
    if training_args.max_steps <= 0:
        raise ValueError("streaming: true needs max_steps > 0 (a stream has no length to count epochs by)")
    # accelerate then gives each process its own parquet row groups instead of process 0 reading for all.
    training_args.accelerator_config.dispatch_batches = False


def build_seq2seq_trainer(model, tokenizer, train_dataset, eval_dataset, training_args):
    """The stock Seq2SeqTrainer with dynamic padding (labels padded with -100) and our callbacks."""
    return Seq2SeqTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
        processing_class=tokenizer,
        callbacks=training_callbacks(training_args),
    )
