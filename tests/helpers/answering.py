"""The answering model's fit, by construction: train in short rounds until every property the tests downstream rely
on holds, with a margin that rounding cannot cross, and fail with what was reached if the step bound comes first.

A fixed number of steps (the old fixture: 60) gives a model whose greedy answers depend on how the machine rounds;
on one machine all properties held, on the next one answer had 7 distinct tokens instead of 8. Here the rounds go on
until the properties hold *on this machine*, and the greedy decisions the tests compare across computations
(batched against alone, CTranslate2 against torch) are each won by at least MARGIN in the logits, so that two
computations that differ in the last bits of a float cannot choose different tokens.
"""

from dataclasses import dataclass, field

import torch

from sccl_hf.apps.serve import repetition_controls

# the logit gap between the chosen token and the runner-up at every greedy step the tests compare: float32
# computations of the same model by different kernels or batch shapes differ by ~1e-5 in these logits
MARGIN = 1e-2
# the settings test_batching's shared batch and test_serve's penalties use on PROMPTS[6]
SHARED_BATCH_SETTINGS = [{}, {"repetition_penalty": 1.5}, {"no_repeat_ngram_size": 2},
                         {"repetition_penalty": 1.3, "no_repeat_ngram_size": 3}]  # fmt: skip
SERVE_PENALTIES = {"frequency_penalty": 1.0, "presence_penalty": 0.4}  # test_serve's request
BATCHING_LIMITS = [12, 40, 20, 33, 8, 27, 40, 16]  # test_batching: requests leave at their own steps


@dataclass
class Reached:
    """What the model does now: each property by name (True when it holds) and the figures behind them."""

    properties: dict[str, bool] = field(default_factory=dict)
    figures: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(self.properties.values())

    def failing(self) -> list[str]:
        return [name for name, held in self.properties.items() if not held]


def greedy_with_gaps(model, tokenizer, prompt: str, max_new_tokens: int, **settings) -> tuple[list[int], float]:
    """transformers' greedy `generate` of one prompt (its processors for `settings`) and the smallest gap between
    the best and the second-best processed score over the steps it took."""
    batch = tokenizer([prompt], return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                         output_scores=True, return_dict_in_generate=True, **settings)  # fmt: skip
    gaps = []
    for scores in out.scores:
        top = scores[0].float().topk(2).values
        gaps.append(float(top[0] - top[1]) if torch.isfinite(top[1]) else float("inf"))
    return out.sequences[0, 1:].tolist(), min(gaps)


def check(model, tokenizer, prompts: list[str], everything: bool = True) -> Reached:
    """The properties the tests need of the answering model, on `prompts` (ANSWERING_PROMPTS). Without
    `everything`, it returns at the first group that fails (the cheap ones come first)."""
    reached = Reached()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    model.eval()
    with torch.no_grad():
        batch = tokenizer(prompts, return_tensors="pt", padding=True)
        out = model.my_generate(batch["input_ids"], batch["attention_mask"], max_seq_len=40, search_type="greedy")
        answers = [[t for t in row[1:].tolist() if t != pad] for row in out]
        texts = [tokenizer.decode(a, skip_special_tokens=True) for a in answers]
        reached.figures["answers"] = texts
        reached.figures["lengths"] = [len(a) for a in answers]
        reached.figures["distinct tokens"] = [len(set(a)) for a in answers]
        # long, varied, pairwise different: a random model's answers are [PAD] after [PAD] or one token repeated
        reached.properties["long"] = min(map(len, answers)) >= 12 and sum(map(len, answers)) >= 200
        reached.properties["varied"] = all(len(set(a)) >= 8 for a in answers)
        reached.properties["pairwise different"] = len({tuple(a) for a in answers}) == len(answers)
        # test_model's stop strings: most answers hold a comma, so stopping at one changes them
        reached.properties["commas"] = sum("," in t for t in texts) >= 5
        if not (everything or reached.ok):
            return reached

        # every greedy decode the tests compare across computations, each with its smallest winning gap
        gaps = {}
        plain = {}
        for prompt in prompts:
            plain[prompt], gaps[prompt] = greedy_with_gaps(model, tokenizer, prompt, 40)
        penalised = prompts[6]
        with_settings = []
        for settings in SHARED_BATCH_SETTINGS:
            ids, gaps[f"{penalised} {settings}"] = greedy_with_gaps(model, tokenizer, penalised, 40, **settings)
            with_settings.append(tuple(ids))
        controls = repetition_controls(SERVE_PENALTIES["frequency_penalty"], SERVE_PENALTIES["presence_penalty"])
        serve_plain, gap_plain = greedy_with_gaps(model, tokenizer, penalised, 30)
        serve_penalised, gap_penalised = greedy_with_gaps(model, tokenizer, penalised, 30, **controls)
        gaps[f"{penalised} 30"], gaps[f"{penalised} 30 {controls}"] = gap_plain, gap_penalised
        # test_batching's shared batch and test_serve's penalties: every setting changes the answer
        reached.properties["settings change the answer"] = (
            len(set(with_settings)) == len(with_settings) and serve_plain != serve_penalised
        )
        # test_batching: requests leave at many different steps, some at [EOS]
        limited = [plain[p][:n] for p, n in zip(prompts, BATCHING_LIMITS)]
        limited = [ids[: ids.index(eos) + 1] if eos in ids else ids for ids in limited]
        reached.properties["answers end at different steps"] = len({len(ids) for ids in limited}) >= 6 and any(
            ids[-1] == eos for ids in limited
        )
        # test_ct2: within 40 tokens some answers end and some do not
        ended = [eos in plain[p] for p in prompts]
        reached.properties["some answers end, some do not"] = any(ended) and not all(ended)
        if not (everything or reached.ok):
            return reached
        # test_model: contrastive search with a penalty takes another path than greedy
        differs = []
        for prompt in ("你好", "3加5等于多少？"):
            one = tokenizer([prompt], return_tensors="pt")
            greedy = model.my_generate(one["input_ids"], one["attention_mask"], max_seq_len=12, search_type="greedy")
            contrastive = model.my_generate(one["input_ids"], one["attention_mask"], max_seq_len=12,
                                            search_type="contrastive", penalty_alpha=0.8, top_k=4)  # fmt: skip
            differs.append(greedy[0].tolist() != contrastive[0].tolist())
        reached.properties["contrastive search differs from greedy"] = all(differs)
        smallest = min(gaps, key=gaps.get)
        reached.figures["smallest gap"] = (round(gaps[smallest], 5), smallest)
        reached.properties[f"every greedy step won by >= {MARGIN}"] = gaps[smallest] >= MARGIN
    return reached


def fit(model, tokenizer, prompts, targets, max_steps=600, every=5, lr=5e-3) -> tuple[int, Reached]:
    """Train towards `targets` in rounds of `every` AdamW steps until `check` holds (at `max_steps` at the most).
    Returns the steps taken and what was reached; the caller fails with it if it is not ok."""
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    labels = tokenizer(targets, return_tensors="pt", padding=True)["input_ids"]
    labels[labels == tokenizer.pad_token_id] = -100
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    steps, reached = 0, Reached(properties={"trained": False})
    while steps < max_steps:
        model.train()
        for _ in range(every):
            model(**batch, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        steps += every
        if steps >= 40:  # nothing before: a model this young answers [PAD] after [PAD]
            reached = check(model, tokenizer, prompts, everything=steps >= max_steps)
            if reached.ok:
                break
    model.eval()
    return steps, reached
