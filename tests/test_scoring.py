"""Response log-probabilities: the quantity DPO optimises and evaluation reports, checked by hand."""

import torch

from sccl_hf.model import load_model, load_tokenizer
from sccl_hf.scoring import score_responses

ROWS = [("浙江的省会是哪里？", "杭州"), ("3加5等于多少？", "八加零等于八")]


def test_scores_equal_the_model_loss_times_the_tokens(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir).eval(), load_tokenizer(tiny_model_dir)
    scores = score_responses(model, tokenizer, [p for p, _ in ROWS], [r for _, r in ROWS], batch_size=2)
    for (prompt, response), score in zip(ROWS, scores):
        encoded = tokenizer([prompt], return_tensors="pt")
        labels = tokenizer([response], return_tensors="pt")["input_ids"]
        assert labels[0, -1] == tokenizer.eos_token_id  # the closing [EOS] is scored too
        with torch.no_grad():
            loss = model(**encoded, labels=labels).loss  # mean over the response's tokens, one row at a time
        assert score.tokens == labels.shape[1] and score.characters == len(response)
        assert abs(score.log_prob - (-loss.item() * labels.shape[1])) < 1e-3
