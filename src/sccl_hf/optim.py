"""`optim: adafactor_t5`: the optimizer ChatLM-mini-Chinese's own trainer really ran, and T5's.

The seed's `model/trainer.py` builds `torch_optimizer.Adafactor(params, lr=learn_rate)` and wraps it in OneCycleLR.
That Adafactor's defaults are `relative_step=True, scale_parameter=True`, and in that mode the step size of every
matrix is `min(1e-2, 1/sqrt(step)) * max(1e-3, RMS(matrix))`: the group's `lr`, and so the OneCycle schedule, is
never read. Every update is relative to the size of what it changes. The Trainer's `optim: adafactor` is another
optimizer: transformers' `Adafactor(scale_parameter=False, relative_step=False)` with an absolute rate.

Two pieces the Trainer does not have, each a mixin (the seq2seq stages and the preference stage use them):
- `RelativeStepOptimArgument`: training arguments that accept `optim: adafactor_t5` (the stock classes refuse any
  name they do not know); `Seq2SeqArguments` is `Seq2SeqTrainingArguments` with it;
- `RelativeStepMixin`: a Trainer that builds the optimizer below and its schedule;
  its `RelativeStepSchedule` is a scheduler that changes nothing (the optimizer computes its own step size) but reports
  the relative step `min(1e-2, 1/sqrt(step))`, so the loss log's `learning_rate` shows what the optimizer used,
  times each matrix's RMS. transformers' `AdafactorSchedule` reads the optimizer's private `_get_lr`, which the
  Trainer's accelerate wrapper does not have ('AcceleratedOptimizer' object has no attribute '_get_lr').
The optimizer itself is transformers' `Adafactor` with `lr=None` (stock: the Trainer builds it from
`optimizer_cls_and_kwargs`, and saves and restores its state, each matrix's step count included, in checkpoints).
"""

import logging
import math
from dataclasses import dataclass, field, fields

import torch
from transformers import Seq2SeqTrainingArguments

logger = logging.getLogger(__name__)
ADAFACTOR_T5 = "adafactor_t5"
# transformers' Adafactor in the mode of torch_optimizer 0.3.0's defaults (the seed's): eps (1e-30, 1e-3), clipping
# at 1.0, decay -0.8, no first moment, no weight decay
ADAFACTOR_T5_KWARGS = {"lr": None, "relative_step": True, "scale_parameter": True, "warmup_init": False}


def relative_step(step: int) -> float:
    """The step size of relative-step Adafactor before it is scaled by a matrix's RMS (T5's rsqrt decay, capped)."""
    return min(1e-2, 1.0 / math.sqrt(max(step, 1)))


class RelativeStepSchedule(torch.optim.lr_scheduler.LRScheduler):
    """Reports the relative step of `adafactor_t5` as the learning rate; the optimizer never reads it."""

    def __init__(self, optimizer, last_epoch: int = -1):
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", 0.0)  # lr is None in relative mode; LRScheduler wants a number
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        # last_epoch counts the scheduler's steps: the optimizer's next step is number last_epoch + 1
        return [relative_step(self.last_epoch + 1) for _ in self.optimizer.param_groups]


@dataclass
class RelativeStepOptimArgument:
    """Training arguments whose `optim` may also be `adafactor_t5` (see the module's docstring): mixed in before a
    `TrainingArguments` subclass (`Seq2SeqArguments` here, the preference stage's `PreferenceConfig`)."""

    # a plain string: HfArgumentParser offers an enum-typed field's members only
    optim: str = field(
        default=next(f.default for f in fields(Seq2SeqTrainingArguments) if f.name == "optim"),
        metadata={"help": "The optimizer: one of transformers' OptimizerNames, or adafactor_t5 (the seed's)."},
    )

    def __post_init__(self):
        chosen = self.optim
        if chosen == ADAFACTOR_T5:
            self.optim = "adafactor"  # for the checks of the stock class; the trainer builds the real one
            # said, not refused: a recipe written for another optimizer may be rerun with --optim adafactor_t5
            logger.warning(
                "optim adafactor_t5 computes its own step size (min(1e-2, 1/sqrt(step)) times each matrix's RMS): "
                "learning_rate %s, lr_scheduler_type %s and warmup_steps %s are not used",
                self.learning_rate, self.lr_scheduler_type, self.warmup_steps,
            )  # fmt: skip
        super().__post_init__()
        self.optim = chosen


@dataclass
class Seq2SeqArguments(RelativeStepOptimArgument, Seq2SeqTrainingArguments):
    """`Seq2SeqTrainingArguments` whose `optim` may also be `adafactor_t5`; the trainer
    (`training.build_seq2seq_trainer`) builds that optimizer and its schedule."""


class RelativeStepMixin:
    """For a Trainer subclass, with `optim: adafactor_t5`: transformers' Adafactor in relative mode (through the
    Trainer's own `optimizer_cls_and_kwargs`, which Seq2SeqTrainer's and TRL's constructors do not pass on), and a
    schedule that reports the optimizer's own relative step (`RelativeStepSchedule`) instead of scaling an `lr`
    that the optimizer never reads."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.args.optim == ADAFACTOR_T5:
            from transformers.optimization import Adafactor

            self.optimizer_cls_and_kwargs = (Adafactor, ADAFACTOR_T5_KWARGS)
            if not torch.cuda.is_available():
                # Relative steps shrink updates as 1/sqrt(step) times each matrix's RMS: tiny second-moment factors
                # end up as denormal floats, which x86 CPUs compute many times slower (issue 31: the span probe
                # crawled without it).
                torch.set_flush_denormal(True)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None and self.args.optim == ADAFACTOR_T5:
            self.lr_scheduler = RelativeStepSchedule(optimizer or self.optimizer)
        return super().create_scheduler(num_training_steps, optimizer)
