"""What every training stage shares: logging, resume, Ctrl+C/SIGTERM handling, loss history, the final save."""

import contextlib
import csv
import json
import logging
import math
import os
import signal
import sys
import zipfile
from pathlib import Path

import datasets
import torch
import transformers
from safetensors import SafetensorError, safe_open
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, TrainerCallback

from sccl_hf.errors import TrainingError
from sccl_hf.model import copy_remote_code, prepare_for_save, save_tokenizer
from sccl_hf.optim import RelativeStepMixin
from sccl_hf.tables import PackedBatchCollator

logger = logging.getLogger(__name__)


def setup_logging(training_args) -> None:
    level = training_args.get_process_log_level()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout, level=level)
    for library in (transformers, datasets):
        library.utils.logging.set_verbosity(level)
    logging.getLogger("sccl_hf").setLevel(level if level != logging.WARNING else logging.INFO)


def checkpoint_problem(folder: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from, or None when it is complete.

    A save cut short (kill -9, a full disk, a second Ctrl+C) leaves files missing or truncated: the trainer
    state must parse, every safetensors file must be as long as its header says, and every torch pickle (model,
    optimizer, scheduler, RNG states: zip archives) must have its central directory, which is written last."""
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return "trainer_state.json is cut short"
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        return "no weights"
    for path in sorted(folder.rglob("*.safetensors")):
        try:  # safetensors refuses a file its header does not cover exactly ("file not fully covered")
            with safe_open(path, "np"):
                pass
        except (SafetensorError, OSError):
            return f"{path.name} is cut short"
    for path in sorted(p for pattern in ("*.pt", "*.pth", "*.bin") for p in folder.rglob(pattern)):
        try:
            zipfile.ZipFile(path).close()
        except (zipfile.BadZipFile, OSError):
            return f"{path.name} is cut short"
    return None


def newest_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest `checkpoint-N` in output_dir that is complete; incomplete ones are skipped with a warning."""
    folders = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    for folder in sorted(folders, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return str(folder)
        logger.warning("skipping the incomplete checkpoint %s (%s)", folder, problem)
    return None


def resolve_resume(training_args) -> str | None:
    """`resume_from_checkpoint: true` means the newest complete checkpoint in output_dir (none yet: start fresh)."""
    value = training_args.resume_from_checkpoint
    if value in (None, "", "false", "False"):
        return None
    if value in ("true", "True", True):
        last = newest_complete_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
        if last is None:
            logger.info(
                "resume_from_checkpoint: no complete checkpoint in %s yet, starting from step 0",
                training_args.output_dir,
            )
        return last
    if not os.path.isdir(value):
        raise FileNotFoundError(f"resume_from_checkpoint: no such checkpoint directory: '{value}'")
    problem = checkpoint_problem(Path(value))
    if problem:
        raise TrainingError(f"resume_from_checkpoint: {value} cannot be resumed from: {problem}")
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

    def release(self) -> None:
        """Give the signals back. Called once the final model is saved (not at the end of training: a signal
        during the final evaluation or save must not cut a finished run's model short)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


class StreamPositionCallback(TrainerCallback):
    """Saves a streamed training set's position in every checkpoint, and resumes the stream there, so that resuming
    costs the same at any step (the Trainer's own resume replays the stream from its start, re-reading and
    re-tokenizing every earlier batch: hours at step 100,000 of a GB-scale run).

    The position is the data loader's state (torchdata's StatefulDataLoader, which accelerate builds when asked,
    holding the `datasets` stream's state, per worker), one file per process: `stream_state_<rank>.json`. A resumed
    run trains on the same batches as the uninterrupted one (windows, not a shuffle buffer: see
    `tables.shuffle_windows`) with the same random state, so it logs the same losses.

    Without a usable position (a checkpoint from before this, another number of processes or data loader workers)
    the Trainer's replay is used, with a warning."""

    def __init__(self, load_rng_state):
        self._load_rng_state = load_rng_state  # the Trainer's own (per process, every device kind)
        self._position = None  # the data loader's state to restore when training begins
        self._rng_checkpoint = None  # restore the random state from here once the first batches are read

    @staticmethod
    def _path(checkpoint, rank: int) -> Path:
        return Path(checkpoint) / f"stream_state_{rank}.json"

    def prepare_resume(self, checkpoint: str, args) -> None:
        """Before `train`: resume at the saved position if every process has one that fits this run."""
        paths = [self._path(checkpoint, rank) for rank in range(args.world_size)]
        problem = None
        if not all(p.is_file() for p in paths):
            problem = "it holds no stream position for every process"
        else:
            try:
                saved = json.loads(paths[args.process_index].read_text(encoding="utf-8"))
                shape = (saved["world_size"], saved["num_workers"])
            except (ValueError, KeyError, TypeError) as error:
                saved, shape = None, None
                problem = f"{paths[args.process_index].name} cannot be read ({error!r})"
            if saved is not None and shape != (args.world_size, args.dataloader_num_workers):
                problem = (
                    f"it was saved by {saved['world_size']} process(es) with {saved['num_workers']} data loader "
                    f"worker(s) each, this run has {args.world_size} and {args.dataloader_num_workers}"
                )
        if problem:
            logger.warning("%s: %s; the stream is replayed from its start up to the checkpoint", checkpoint, problem)
            return
        # Every process decides alike (the same files), so all of them skip the replay or none does.
        args.ignore_data_skip = True
        self._position = saved["data_loader"]
        self._rng_checkpoint = checkpoint
        logger.info("resuming the stream at its saved position (step %d)", saved["step"])

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        if self._position is not None:
            train_dataloader.load_state_dict(self._position)
            self._position = None

    def on_step_begin(self, args, state, control, **kwargs):
        # Starting the data loader draws from torch's random generator; the uninterrupted run drew that at step 0.
        # The Trainer restores the checkpoint's random state before that draw, so it is restored again here, after
        # it, for the dropout of the first resumed step to match.
        if self._rng_checkpoint is not None:
            self._load_rng_state(self._rng_checkpoint)
            self._rng_checkpoint = None

    def on_save(self, args, state, control, train_dataloader=None, **kwargs):
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if train_dataloader is None or not checkpoint.is_dir():
            return
        saved = {
            "step": state.global_step,
            "world_size": args.world_size,
            "num_workers": args.dataloader_num_workers,
            "data_loader": train_dataloader.state_dict(),
        }
        path = self._path(checkpoint, args.process_index)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(saved), encoding="utf-8")
        partial.replace(path)  # a file that is there is whole


class EpochModelCallback(TrainerCallback):
    """`save_each_epoch: true`: a self-contained model folder `output_dir/epoch-N` at the end of each epoch, for
    stages that read the model of a given epoch (ChatLM's DPO data came from the SFT model after one epoch).
    `trainer.save_model` runs on every process (ZeRO-3 gathers its shards there); process 0 adds the tokenizer
    and the remote code."""

    def __init__(self, trainer, tokenizer):
        self.trainer, self.tokenizer = trainer, tokenizer

    def on_epoch_end(self, args, state, control, **kwargs):
        if state.epoch is None or abs(state.epoch - round(state.epoch)) > 1e-6 or round(state.epoch) < 1:
            return  # stopped inside an epoch (max_steps, a signal): the final save has that model
        folder = Path(args.output_dir) / f"epoch-{round(state.epoch)}"
        model = self.trainer.model
        use_cache = model.config.use_cache
        prepare_for_save(model, self.tokenizer)
        self.trainer.save_model(str(folder), _internal_call=True)
        model.config.use_cache = use_cache  # training goes on without the cache
        if self.trainer.is_world_process_zero():
            save_tokenizer(self.tokenizer, folder)
            copy_remote_code(folder)
            logger.info("epoch %d: model saved to %s", round(state.epoch), folder)


class LossHistoryCallback(TrainerCallback):
    """Writes every logged number (loss, learning rate, DPO rewards, ...) to output_dir/training_log.csv and
    plots loss and learning rate to training_log.png. A resumed run keeps the rows up to its checkpoint."""

    def __init__(self, output_dir: str):
        self.csv_path = Path(output_dir) / "training_log.csv"
        self.png_path = Path(output_dir) / "training_log.png"
        self.rows, self.fields = [], ["step"]

    def on_train_begin(self, args, state, control, **kwargs):
        if args.process_index != 0:
            return
        if state.global_step > 0 and self.csv_path.is_file():  # resumed: keep what led to the checkpoint
            with open(self.csv_path, newline="") as f:
                reader = csv.DictReader(f)
                self.fields = list(reader.fieldnames or ["step"])
                rows = [{k: float(v) for k, v in row.items() if v not in (None, "")} for row in reader]
            self.rows = [{**r, "step": int(r["step"])} for r in rows if r.get("step", 0) <= state.global_step]
        self._write_all()

    def _write_all(self) -> None:
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields)
            writer.writeheader()
            writer.writerows(self.rows)

    def on_log(self, args, state, control, logs=None, **kwargs):
        # args.process_index, not state.is_world_process_zero: transformers 5.23 leaves the latter True on every
        # process during training, and two processes would write the file.
        if args.process_index != 0 or not logs or "train_loss" in logs:  # also skip the end-of-run summary
            return
        numbers = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
        row = {"step": state.global_step, **numbers}
        self.rows.append(row)
        new_fields = [k for k in numbers if k not in self.fields]
        if new_fields:  # a new column: write the file again with the wider header
            self.fields += new_fields
            self._write_all()
        else:
            with open(self.csv_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fields).writerow(row)

    def on_train_end(self, args, state, control, **kwargs):
        if args.process_index == 0 and self.rows:
            plot_history(self.rows, self.png_path)


def parent_final_loss(model_dir) -> float | None:
    """The final training loss recorded beside a saved model (its stage's results.json), if there is one."""
    path = Path(model_dir) / "results.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))["results"]["final_loss"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


class StartingLossCallback(TrainerCallback):
    """Warns at the first logged loss when it is far above where a healthy run starts: a new model starts at about
    ln(vocabulary size) (a uniform guess), a model trained before near its own final loss. A start above
    ln(V) + 1 for a new model, or above its parent's final loss + max(2, ln(V) / 3) for a saved one, is not
    explained by the data being new: the usual causes are named in the warning."""

    def __init__(self, vocab_size: int, parent_loss: float | None = None, from_saved_model: bool = False):
        self.uniform = math.log(vocab_size)
        self.parent_loss, self.from_saved_model = parent_loss, from_saved_model
        self.checked = False

    def expectation(self) -> tuple[str, float]:
        if not self.from_saved_model:
            return f"a new model starts near ln(vocabulary size) = {self.uniform:.2f}", self.uniform + 1.0
        if self.parent_loss is not None:
            limit = self.parent_loss + max(2.0, self.uniform / 3)
            return f"the model it starts from ended its training at {self.parent_loss:.2f}", limit
        return (
            f"a trained model starts well under a uniform guess, ln(vocabulary size) = {self.uniform:.2f}",
            self.uniform,
        )

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.checked or not logs or "loss" not in logs:
            return
        self.checked = True
        loss = logs["loss"]
        expected, limit = self.expectation()
        if math.isfinite(loss) and loss > limit:
            logger.warning(
                "the first logged loss, %.2f at step %d, is far above where this run should start (%s). Likely "
                "causes: the tokenizer and the model come from different runs (tokenizer_dir), labels that are not "
                "masked or not the model's targets (prompt/response columns swapped), or a learning rate so high "
                "that the first steps already diverged.",
                loss,
                state.global_step,
                expected,
            )


class NonFiniteLossCallback(TrainerCallback):
    """Stops the run when a logged loss is NaN or infinite: nothing after that point is worth saving.

    The Trainer's `logging_nan_inf_filter` is turned off (see `training_callbacks`), so a non-finite step
    shows in the loss logged for its window instead of being replaced by the window's average."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "eval_loss"):
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                window = f"steps {max(state.global_step - args.logging_steps + 1, 1)}-{state.global_step}"
                raise TrainingError(
                    f"non-finite {key} ({value}) at step {state.global_step} (logged over {window}), learning rate "
                    f"{logs.get('learning_rate', 'unknown')}: training stopped and no final model was saved; "
                    "lower learning_rate or check the data"
                )


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
    training_args.logging_nan_inf_filter = False  # a NaN must show in the log, where NonFiniteLossCallback sees it
    return [InterruptCallback(), LossHistoryCallback(training_args.output_dir), NonFiniteLossCallback()]


def _interrupt(trainer) -> InterruptCallback:
    return next(c for c in trainer.callback_handler.callbacks if isinstance(c, InterruptCallback))


def _stream_position(trainer) -> StreamPositionCallback | None:
    return next((c for c in trainer.callback_handler.callbacks if isinstance(c, StreamPositionCallback)), None)


@contextlib.contextmanager
def autocast_state_kept():
    """Restores this thread's autocast switches when the block ends. A bf16 DPO run with gradient checkpointing (TRL's
    defaults) left CPU autocast switched on after `trainer.train()`: the exit of accelerate's autocast-wrapped forward
    restored "on" (dev/LOG.md). Whatever ran next in the process (the final save's checks, the next stage in a
    script or a test) then computed in bf16 without asking."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    saved = {device: (torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)) for device in devices}
    try:
        yield
    finally:
        for device, (enabled, dtype) in saved.items():
            torch.set_autocast_enabled(device, enabled)
            torch.set_autocast_dtype(device, dtype)


def train(trainer, training_args):
    """Train (resuming if asked). Stopped early by Ctrl+C/SIGTERM: the checkpoint is written, exit with 130.
    A signal after the last step (during the final evaluation) does not stop the final save."""
    # The Trainer sets the model's `use_cache` from `training_args.use_cache` (off by default: the key/value cache
    # serves generation, and costs memory while training), but T5's encoder and decoder stacks keep copies of the
    # config made when the model was built, so a new model trained with the cache on. Every copy gets the setting;
    # saved configs turn it back on for generation (see prepare_for_save).
    for module in trainer.model.modules():
        if hasattr(getattr(module, "config", None), "use_cache"):
            module.config.use_cache = training_args.use_cache
    checkpoint = resolve_resume(training_args)
    stream_position = _stream_position(trainer)
    if checkpoint and stream_position:
        stream_position.prepare_resume(checkpoint, training_args)
    try:
        with autocast_state_kept():
            result = trainer.train(resume_from_checkpoint=checkpoint)
    except BaseException:
        _interrupt(trainer).release()
        raise
    interrupt = _interrupt(trainer)
    finished = trainer.state.max_steps > 0 and trainer.state.global_step >= trainer.state.max_steps
    if interrupt.signal_received is not None and not finished:
        interrupt.release()
        last = newest_complete_checkpoint(training_args.output_dir)
        print(
            f"stopped at step {trainer.state.global_step}; checkpoint: {last}\n"
            f"continue with --resume_from_checkpoint true",
            file=sys.stderr,
        )
        raise SystemExit(130)
    return result


def save_trained(trainer, training_args, tokenizer, result) -> dict:
    """Save the final self-contained model directory (a LoRA run: its adapter) to output_dir, the Trainer's
    state and metrics beside it, and return the run's results (metrics, rows and tokens seen).

    Ctrl+C/SIGTERM stay ours until the folder is complete: a signal now is noted, the save finishes, and the
    run then exits with 130 saying where the finished model is."""
    interrupt = _interrupt(trainer)
    try:
        results = _save(trainer, training_args, tokenizer, result)
    finally:
        interrupt.release()
    if interrupt.signal_received is not None:
        name = signal.Signals(interrupt.signal_received).name
        print(
            f"{name} received after training had finished: the final model is complete in "
            f"{Path(training_args.output_dir).resolve()}",
            file=sys.stderr,
        )
        raise SystemExit(130)
    return results


def _save(trainer, training_args, tokenizer, result) -> dict:
    is_adapter = hasattr(trainer.model, "peft_config")  # a LoRA run saves its adapter (see stage merge_lora)
    if not is_adapter:
        prepare_for_save(trainer.model, tokenizer)
    # Every process: DeepSpeed ZeRO-3 gathers its shards here. `_internal_call`: no push yet, the folder is not
    # complete (tokenizer, remote code); push_to_hub pushes once, below.
    trainer.save_model(training_args.output_dir, _internal_call=True)
    metrics = dict(result.metrics)
    state = trainer.state
    metrics["num_input_tokens_seen"] = state.num_input_tokens_seen
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    if trainer.is_world_process_zero():
        save_tokenizer(tokenizer, training_args.output_dir)
        if not is_adapter:
            copy_remote_code(training_args.output_dir)
        logger.info("%s saved to %s", "adapter" if is_adapter else "model", training_args.output_dir)
    trainer.accelerator.wait_for_everyone()
    if training_args.push_to_hub:
        push_with_trainer(trainer, training_args)
    batch_rows = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    packed = isinstance(trainer.data_collator, PackedBatchCollator)  # batches of varying rows: not counted
    return {
        "metrics": metrics,
        "steps": state.global_step,
        "epochs": state.epoch,
        # full batches (the last may be short)
        "rows_seen": None if packed else state.global_step * batch_rows * training_args.world_size,
        "prompt_tokens_seen": state.num_input_tokens_seen,  # encoder tokens, padding excluded
        "final_loss": next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None),
        "output_dir": str(training_args.output_dir),
    }


def push_with_trainer(trainer, training_args) -> None:
    """`push_to_hub: true`: the Trainer's own push (hub_model_id, hub_private_repo, hub_token, hub_revision), of
    the finished folder, with our model card instead of the Trainer's."""
    from sccl_hf.publish import model_card

    repo_id = trainer.hub_model_id

    def write_card(**_):
        if trainer.is_world_process_zero():
            card = model_card(Path(training_args.output_dir), repo_id)
            (Path(training_args.output_dir) / "README.md").write_text(card, encoding="utf-8")

    trainer.create_model_card = write_card
    trainer.push_to_hub(commit_message="Model trained with sccl-hf", blocking=True)
    logger.info("pushed to %s", repo_id)


def check_streaming(data_args, training_args) -> None:
    """A streamed dataset has no length: the run is measured in steps, and each process reads its own shards."""
    if not data_args.streaming:
        return
    if training_args.max_steps <= 0:
        raise ValueError("streaming: true needs max_steps > 0 (a stream has no length to count epochs by)")
    # accelerate then gives each process its own parquet row groups instead of process 0 reading for all.
    training_args.accelerator_config.dispatch_batches = False


class RelativeStepTrainer(RelativeStepMixin, Seq2SeqTrainer):
    """The stock Seq2SeqTrainer, with `optim: adafactor_t5` built (sccl_hf.optim)."""


def build_seq2seq_trainer(
    model,
    tokenizer,
    train_dataset,
    eval_dataset,
    training_args,
    data_args=None,
    save_each_epoch: bool = False,
    parent_dir=None,
):
    """The stock Seq2SeqTrainer with dynamic padding (labels padded with -100) and our callbacks; a stream's
    position is saved in each checkpoint (see StreamPositionCallback); `parent_dir`: the saved model a fine-tuning
    run starts from (its final loss sets where the run should start, see StartingLossCallback). With a token budget per batch the stream's
    items are whole batches (`tables.shuffle_windows`): the data loader takes one at a time and unpacks it."""
    collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
    if getattr(data_args, "max_tokens_per_batch", None):
        logger.info(
            "batches of at most %d rows and %d positions: the data loader takes one packed batch at a time",
            training_args.per_device_train_batch_size,
            data_args.max_tokens_per_batch,
        )
        training_args.per_device_train_batch_size = 1
        collator = PackedBatchCollator(collator)
    trainer = RelativeStepTrainer(  # the stock Seq2SeqTrainer unless optim is adafactor_t5 (the mixin checks)
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=training_callbacks(training_args),
    )
    if isinstance(train_dataset, datasets.IterableDataset):
        # transformers 5 no longer exposes accelerate's stateful data loader in its arguments: set it on the
        # Accelerator's data loader configuration, which `prepare` reads.
        trainer.accelerator.dataloader_config.use_stateful_dataloader = True
        trainer.add_callback(StreamPositionCallback(trainer._load_rng_state))
    if save_each_epoch:
        trainer.add_callback(EpochModelCallback(trainer, tokenizer))
    parent_loss = parent_final_loss(parent_dir) if parent_dir else None
    trainer.add_callback(StartingLossCallback(model.config.vocab_size, parent_loss, from_saved_model=bool(parent_dir)))
    return trainer
