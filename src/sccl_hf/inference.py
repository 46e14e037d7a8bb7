"""Batched answers from a model directory: the one place prompts become responses (demo, DPO data, eval)."""

import unicodedata

import torch


@torch.no_grad()
def answer_prompts(
    model, tokenizer, prompts: list[str], search_type: str = "greedy", batch_size: int = 32, max_new_tokens: int | None = None
) -> list[str]:
    """Responses to `prompts` with `model.my_generate`, decoded without special tokens."""
    model.eval()
    max_len = getattr(model.config, "max_seq_len", 256)
    max_new_tokens = min(max_new_tokens or max_len, max_len)
    answers = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(
            prompts[start : start + batch_size], padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        ).to(model.device)
        output = model.my_generate(
            batch["input_ids"], batch["attention_mask"], max_seq_len=max_new_tokens, search_type=search_type
        )
        answers += [text.strip() for text in tokenizer.batch_decode(output, skip_special_tokens=True)]
    return answers


def normalize_answer(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().rstrip("。.")


def exact_match(predictions: list[str], references: list[str]) -> float:
    return sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references)) / max(len(references), 1)
