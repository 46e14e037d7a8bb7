"""Log-probabilities of responses under a seq2seq model: what DPO optimises and what evaluation measures.

The decoder reads `[decoder start] + response` and, at position t, predicts response token t. Every response
ends in `[EOS]` (the tokenizer's post-processor), so the `[EOS]` that closes an answer is scored too.
"""

from dataclasses import dataclass

import torch

from sccl_hf.model import model_max_len


def token_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities of `targets` under `logits`.

    Args:
        logits: `(batch, steps, vocab)`; position t predicts `targets[:, t]`.
        targets: `(batch, steps)` token ids, -100 where there is no token (padding).

    Returns:
        `(log_probs, mask, log_softmax)`: `(batch, steps)` log-probabilities (0 at padding), the `(batch, steps)`
        boolean mask of real tokens, and the full `(batch, steps, vocab)` log-softmax.
    """
    mask = targets != -100
    log_softmax = logits.float().log_softmax(dim=-1)
    log_probs = log_softmax.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    return log_probs, mask, log_softmax


def response_logits(model, encoder_input_ids, encoder_attention_mask, decoder_input_ids, decoder_attention_mask):
    """Decoder logits for `decoder_input_ids` = `[decoder start, response...]`, cut so that position t
    predicts decoder token t + 1: `(batch, response_len, vocab)`."""
    return model(
        input_ids=encoder_input_ids,
        attention_mask=encoder_attention_mask,
        decoder_input_ids=decoder_input_ids,
        decoder_attention_mask=decoder_attention_mask,
        use_cache=False,
        return_dict=True,
    ).logits[:, :-1]


@dataclass
class ResponseScore:
    log_prob: float  # summed over the response's tokens, [EOS] included
    tokens: int
    characters: int


@torch.no_grad()
def score_responses(model, tokenizer, prompts: list[str], responses: list[str], batch_size: int = 16, max_len=None):
    """Each response's summed log-probability given its prompt (both truncated to the model's limit)."""
    max_len = max_len or model_max_len(model.config)
    start = model.config.decoder_start_token_id
    scores = []
    model.eval()
    for first in range(0, len(prompts), batch_size):
        batch_prompts, batch_responses = prompts[first : first + batch_size], responses[first : first + batch_size]
        encoded = tokenizer(batch_prompts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        targets = tokenizer(batch_responses, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        labels = targets["input_ids"].masked_fill(targets["attention_mask"] == 0, -100)
        decoder_ids = torch.cat([torch.full_like(labels[:, :1], start), labels.clamp(min=0)], dim=1)
        decoder_mask = torch.cat([torch.ones_like(labels[:, :1]), targets["attention_mask"]], dim=1)
        logits = response_logits(
            model,
            encoded["input_ids"].to(model.device),
            encoded["attention_mask"].to(model.device),
            decoder_ids.to(model.device),
            decoder_mask.to(model.device),
        )
        log_probs, mask, _ = token_log_probs(logits, labels.to(model.device))
        for response, row_log_probs, row_mask in zip(batch_responses, log_probs, mask):
            scores.append(ResponseScore(row_log_probs.sum().item(), int(row_mask.sum()), len(response)))
    return scores
