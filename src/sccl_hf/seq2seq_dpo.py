"""DPO for encoder-decoder models on TRL 1.x.

TRL 0.29 removed encoder-decoder support from `DPOTrainer`, and TRL 0.28 does not import under transformers 5.
`Seq2SeqDPOTrainer` keeps TRL's trainer, config, losses (sigmoid, ipo, hinge, ...), reference-model handling
(frozen copy, PEFT adapter disabled, precomputed log-probs) and metrics, and replaces only what differs for
an encoder-decoder:

1. tokenization: prompt -> encoder ids; chosen and rejected -> decoder targets (each ends in [EOS]);
2. the collator: the batch is [chosen; rejected], the prompt repeated for both halves;
3. the forward that scores a completion: the decoder's per-token log-probs of its targets.

TRL's loss reads `input_ids` and `completion_mask` as "the scored sequence". Here that sequence is the decoder's
(decoder start token, then the target), and the prompt travels beside it as `encoder_input_ids`.
"""

import functools

import torch
from transformers.data.data_collator import DataCollatorMixin
from trl import DPOTrainer
from trl.trainer.utils import FusedCausalLMOutput, pad

from sccl_hf.scoring import response_logits, token_log_probs


class DataCollatorForSeq2SeqPreference(DataCollatorMixin):
    """Pad {prompt_ids, chosen_ids, rejected_ids} rows into a [chosen; rejected] encoder-decoder batch.

    Returns `encoder_input_ids`/`encoder_attention_mask` (2B, S), `input_ids`/`attention_mask` (2B, T) the decoder
    sequences `[decoder_start, target...]`, `completion_mask` (2B, T) marking the target tokens, and the
    precomputed reference log-probs when the rows have them.
    """

    return_tensors = "pt"

    def __init__(self, pad_token_id: int, decoder_start_token_id: int):
        self.pad_token_id = pad_token_id
        self.decoder_start_token_id = decoder_start_token_id

    def torch_call(self, examples: list[dict]) -> dict:
        prompts = [torch.tensor(e["prompt_ids"]) for e in examples] * 2
        targets = [e["chosen_ids"] for e in examples] + [e["rejected_ids"] for e in examples]
        decoder = [torch.tensor([self.decoder_start_token_id, *t]) for t in targets]
        completion = [torch.tensor([0] + [1] * len(t)) for t in targets]
        output = {
            "encoder_input_ids": pad(prompts, padding_value=self.pad_token_id, padding_side="right"),
            "encoder_attention_mask": pad([torch.ones_like(p) for p in prompts], padding_value=0, padding_side="right"),
            "input_ids": pad(decoder, padding_value=self.pad_token_id, padding_side="right"),
            "attention_mask": pad([torch.ones_like(d) for d in decoder], padding_value=0, padding_side="right"),
            "completion_mask": pad(completion, padding_value=0, padding_side="right"),
        }
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in examples[0]:
                output[key] = torch.tensor([e[key] for e in examples])
        return output


def add_seq2seq_scoring_head(model) -> None:
    """Make `model(..., labels=labels, fused_lm_head=True)` return TRL's per-token fields for a decoder target.

    TRL patches causal LMs the same way (`add_fused_lm_head`); this is the encoder-decoder version. The full
    logits are built (no chunking): fine for ChatLM-sized vocabularies and responses. Without
    `fused_lm_head=True` the model's forward is unchanged, so generation and saving are not affected.
    """
    original_forward = model.forward

    @functools.wraps(type(model).forward)
    def forward(*args, fused_lm_head=False, labels=None, encoder_input_ids=None, encoder_attention_mask=None, **kwargs):
        if not fused_lm_head:
            return original_forward(*args, labels=labels, **kwargs)
        logits = response_logits(
            model, encoder_input_ids, encoder_attention_mask, kwargs["input_ids"], kwargs["attention_mask"]
        ).float()
        log_probs, mask, log_softmax = token_log_probs(logits, labels[:, 1:])  # labels[:, 0] is the start token
        targets = labels[:, 1:]
        with torch.no_grad():
            entropy = -(log_softmax.exp() * log_softmax).sum(-1) * mask
            mean_logits = logits.mean(-1) * mask
            is_top1 = (logits.argmax(-1) == targets) & mask
            log_sum_sq_probs = torch.logsumexp(2 * log_softmax, dim=-1) * mask
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / mask.sum().clamp(min=1),
            log_probs=log_probs,
            entropy=entropy,
            log_sum_sq_probs=log_sum_sq_probs,
            mean_logits=mean_logits,
            is_top1=is_top1,
            label_mask=mask,
        )

    model.forward = forward


def disable_attention_dropout(model) -> None:
    """T5 applies attention dropout with a float rate (not an nn.Dropout), which TRL's `disable_dropout` misses;
    left on, the policy differs from the reference at step 0 and the DPO loss does not start at ln 2."""
    for module in model.modules():
        if isinstance(getattr(module, "dropout", None), float):
            module.dropout = 0.0


class Seq2SeqDPOTrainer(DPOTrainer):
    """`trl.DPOTrainer` for encoder-decoder models (see the module docstring for what is overridden)."""

    def __init__(self, model, ref_model=None, args=None, processing_class=None, max_seq_len: int = 256, **kwargs):
        self.max_seq_len = max_seq_len
        config = model.config
        kwargs.setdefault(
            "data_collator", DataCollatorForSeq2SeqPreference(config.pad_token_id, config.decoder_start_token_id)
        )
        super().__init__(model, ref_model=ref_model, args=args, processing_class=processing_class, **kwargs)
        self._adapt_models()

    def _adapt_models(self) -> None:
        """Put the encoder-decoder scoring head on top of TRL's causal-LM one (which TRL's __init__ installs),
        and turn off T5's attention dropout when dropout is disabled."""
        policy = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        reference = self.accelerator.unwrap_model(self.ref_model) if self.ref_model is not None else None
        for module in filter(None, (policy, reference)):
            if not getattr(module, "_scores_seq2seq", False):
                add_seq2seq_scoring_head(module)
                module._scores_seq2seq = True
            if self.args.disable_dropout:
                disable_attention_dropout(module)

    def _precompute_ref_logps(self, dataset, name, batch_size):
        self._adapt_models()  # TRL precomputes inside its __init__, before ours returns
        return super()._precompute_ref_logps(dataset, name, batch_size)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        tokenizer, max_len = self._tokenizer, self.max_seq_len

        def tokenize(batch):
            encode = functools.partial(tokenizer, truncation=True, max_length=max_len)
            return {
                "prompt_ids": encode(batch["prompt"])["input_ids"],
                "chosen_ids": encode(batch["chosen"])["input_ids"],
                "rejected_ids": encode(batch["rejected"])["input_ids"],
            }

        return dataset.map(tokenize, batched=True, remove_columns=["prompt", "chosen", "rejected"])
