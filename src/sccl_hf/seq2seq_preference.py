"""Reference-free preference training for encoder-decoder models: ORPO, SimPO and CPO on TRL's experimental trainers.

TRL 1.x keeps an encoder-decoder path in `trl.experimental.orpo.ORPOTrainer` and `trl.experimental.cpo.CPOTrainer`
(SimPO is CPO's `loss_type: simpo`); upstream tests them only with smoke tests on a tiny T5. What they do for our
model, checked against hand computations in tests/test_preference.py: the prompt goes to the encoder, the decoder
reads the target shifted right behind the decoder start token ([PAD]), targets end in [EOS] (the tokenizer's
template), and a response's log-probability is the sum (CPO) or the mean (SimPO, ORPO) over its tokens. Neither
needs a reference model: one model in memory, not two.

What is changed here, and why:
1. prompts are cut to `max_seq_len` (TRL's encoder-decoder path cuts the responses only; a long prompt then
   overflows T5's position buckets' useful range and the memory a recipe was sized for);
2. T5's attention dropout (a float, not an `nn.Dropout`) is switched off with the rest when `disable_dropout`.

The import paths are experimental: TRL may move them. They hold in TRL 1.15 and 1.16 (pyproject pins that range);
without them the stage stops with a message that says which TRL it found and which it needs.
"""

from dataclasses import dataclass, field
from importlib import metadata

from sccl_hf.optim import RelativeStepMixin, RelativeStepOptimArgument
from sccl_hf.seq2seq_dpo import disable_attention_dropout

try:
    from trl.experimental.cpo.cpo_config import CPOConfig
except ImportError as error:  # TRL moved or dropped its experimental trainers
    raise ImportError(
        f"stage preference needs trl.experimental.cpo and trl.experimental.orpo, which TRL "
        f"{metadata.version('trl')} does not have; sccl-hf is tested with trl>=1.15,<1.17 "
        "(pip install 'trl>=1.15,<1.17')"
    ) from error

LOSSES = {  # loss -> (trainer, TRL's loss_type for CPOTrainer)
    "orpo": ("orpo", None),
    "simpo": ("cpo", "simpo"),
    "cpo": ("cpo", "sigmoid"),
}


@dataclass
class PreferenceConfig(RelativeStepOptimArgument, CPOConfig):
    """TRL's `CPOConfig` with `ORPOConfig`'s one other field (`padding_value`), the loss chosen by name and
    `optim: adafactor_t5` (sccl_hf.optim; ORPO from a pretrained model is an SFT run, and SFT uses it).

    - `orpo`: Hong et al. 2024: NLL of the chosen answer + `beta` (their lambda) x the log odds-ratio term.
    - `simpo`: Meng et al. 2024: -log sigmoid(beta x (mean logp chosen - mean logp rejected) - simpo_gamma);
      `cpo_alpha` (default here 0: pure SimPO) adds the chosen answer's NLL.
    - `cpo`: Xu et al. 2024: -log sigmoid(beta x (logp chosen - logp rejected)) + cpo_alpha x NLL of the chosen.
    """

    loss: str = field(default="simpo", metadata={"help": "orpo, simpo or cpo (DPO: stage dpo)"})
    cpo_alpha: float | None = field(
        default=None,
        metadata={"help": "weight of the chosen answer's NLL (simpo, cpo); default: 0 for simpo, 1 for cpo"},
    )

    padding_value: int | None = field(
        default=None, metadata={"help": "ORPO: the padding id (default: the tokenizer's)"}
    )

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss: must be one of {', '.join(LOSSES)}, got '{self.loss}' (DPO is `stage: dpo`)")
        loss_type = LOSSES[self.loss][1]
        if loss_type:
            self.loss_type = loss_type
        if self.cpo_alpha is None:
            self.cpo_alpha = 0.0 if self.loss == "simpo" else 1.0
        super().__post_init__()


def trainer_class(loss: str):
    """The TRL trainer for `loss`, with the encoder-decoder changes above."""
    if LOSSES[loss][0] == "orpo":
        from trl.experimental.orpo import ORPOTrainer as base
    else:
        from trl.experimental.cpo import CPOTrainer as base

    class Seq2SeqPreferenceTrainer(Seq2SeqPreferenceMixin, RelativeStepMixin, base):
        pass

    Seq2SeqPreferenceTrainer.__name__ = f"Seq2Seq{base.__name__}"
    return Seq2SeqPreferenceTrainer


class Seq2SeqPreferenceMixin:
    """Prompts cut to `max_seq_len`; T5's attention dropout off with `disable_dropout`."""

    def __init__(self, model, *args, max_seq_len: int = 256, **kwargs):
        self.max_seq_len = max_seq_len  # before TRL's __init__, which tokenizes the data sets
        super().__init__(model, *args, **kwargs)
        if self.args.disable_dropout:
            disable_attention_dropout(self.model)

    def tokenize_row(self, feature, model=None) -> dict:
        row = super().tokenize_row(feature, model)
        if self.is_encoder_decoder:
            prompt = self.processing_class(feature["prompt"], truncation=True, max_length=self.max_seq_len)
            row["prompt_input_ids"], row["prompt_attention_mask"] = prompt["input_ids"], prompt["attention_mask"]
        return row
