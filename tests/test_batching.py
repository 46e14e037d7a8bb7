"""Continuous batching: requests joining and leaving one decoding loop get the answers they would get alone."""

import threading
import time

import pytest
import torch

from conftest import ANSWERING_PROMPTS as PROMPTS
from helpers.answering import BATCHING_LIMITS as LIMITS
from helpers.answering import SHARED_BATCH_SETTINGS
from sccl_hf.batching import BatchedGenerator, next_token_scores
from sccl_hf.engine import Engine, GenerationCancelled


@pytest.fixture(scope="module")
def answering_engine(answering_model_dir):
    return Engine.load(answering_model_dir, "cpu")  # long, varied answers, different for every prompt


def submit_all(generator, prompts, limits, stagger=0.005, settings=None):
    """Submit each prompt from its own thread (`stagger` seconds apart: joining while others are mid-answer),
    each with its own answer length and settings."""
    results, pieces = [None] * len(prompts), [[] for _ in prompts]
    settings = settings or [{} for _ in prompts]

    def run(i):
        time.sleep(stagger * i)
        results[i] = generator.submit(prompts[i], pieces[i].append, limits[i], **settings[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results, pieces


def alone(engine, prompt: str, limit: int, **settings) -> list[int]:
    """The oracle for greedy answers: the request decoded alone by transformers' own `generate` (its logits
    processors for the repetition settings)."""
    batch = engine.tokenizer([prompt], return_tensors="pt")
    out = engine.model.generate(**batch, max_new_tokens=limit, do_sample=False, num_beams=1, **settings)
    ids = out[0, 1:].tolist()
    return ids[: ids.index(engine.tokenizer.eos_token_id) + 1] if engine.tokenizer.eos_token_id in ids else ids


def token_ids(engine, text: str) -> list[int]:
    return engine.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_greedy_answers_equal_each_request_alone_as_requests_join_and_leave(answering_engine):
    engine = answering_engine
    oracle = [alone(engine, p, n) for p, n in zip(PROMPTS, LIMITS)]
    expected = [engine.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in oracle]
    assert len(set(expected)) == len(PROMPTS) and min(len(e) for e in expected) >= 8  # an oracle worth comparing
    # some end with [EOS], some at their own limit: requests leave at many different steps
    assert len({len(ids) for ids in oracle}) >= 6 and any(ids[-1] == engine.tokenizer.eos_token_id for ids in oracle)
    generator = BatchedGenerator(engine.model, engine.tokenizer, engine.max_len)
    try:
        results, pieces = submit_all(generator, PROMPTS, LIMITS)
    finally:
        generator.close()
    assert [r.text for r in results] == expected
    assert [r.completion_tokens for r in results] == [len(ids) for ids in oracle]  # each left at its own step
    assert ["".join(p).strip() for p in pieces] == [r.text for r in results]  # streamed as produced
    # one loop served them all: far fewer steps than the tokens answered
    assert generator.steps < sum(r.completion_tokens for r in results) / 2


def test_a_cancelled_request_leaves_and_the_others_finish(answering_engine):
    engine = answering_engine
    leaver, others = PROMPTS[0], PROMPTS[1:4]
    expected = [engine.tokenizer.decode(alone(engine, p, 40), skip_special_tokens=True).strip() for p in others]
    generator = BatchedGenerator(engine.model, engine.tokenizer, engine.max_len)
    cancelled, outcome = threading.Event(), {}

    def leaving():
        try:
            generator.submit(leaver, lambda text: None, 40, cancelled=cancelled)
        except GenerationCancelled:
            outcome["left_at_step"] = generator.steps

    def cancel_after_a_few_steps():
        while generator.steps < 5:
            time.sleep(0.005)
        cancelled.set()

    threads = [threading.Thread(target=leaving), threading.Thread(target=cancel_after_a_few_steps)]
    for thread in threads:
        thread.start()
    try:
        results, _ = submit_all(generator, others, [40, 40, 40])
    finally:
        for thread in threads:
            thread.join(timeout=60)
        generator.close()
    assert 5 <= outcome["left_at_step"] < 40
    assert [r.text for r in results] == expected


def test_different_settings_in_one_shared_batch_each_equal_transformers_alone(answering_engine):
    """Submitted together, so they share every step: each row decodes with its own repetition settings, and equals
    the same request decoded alone by transformers' generate with those settings."""
    engine = answering_engine
    prompts = [PROMPTS[6]] * len(SHARED_BATCH_SETTINGS)  # one prompt: only the settings differ between rows
    expected = [alone(engine, p, 40, **s) for p, s in zip(prompts, SHARED_BATCH_SETTINGS)]
    assert len({tuple(e) for e in expected}) == len(expected)  # every setting changes the answer
    generator = BatchedGenerator(engine.model, engine.tokenizer, engine.max_len)
    try:
        results, _ = submit_all(generator, prompts, [40] * len(prompts), stagger=0, settings=SHARED_BATCH_SETTINGS)
    finally:
        generator.close()
    assert generator.steps < 80  # one shared loop: one after another, they would take up to 160 steps
    decoded = [engine.tokenizer.decode(e, skip_special_tokens=True).strip() for e in expected]
    assert [r.text for r in results] == decoded


def sampled_alone(engine, prompt: str, limit: int, seed: int, settings: dict) -> str:
    """The oracle for sampling: the model run on the whole decoder input at each step (no cache), transformers'
    processors and warpers on the scores, and a draw from a generator with the request's seed."""
    generator = torch.Generator().manual_seed(seed)
    batch = engine.tokenizer([prompt], return_tensors="pt")
    history = [engine.model.config.decoder_start_token_id]
    with torch.no_grad():
        for _ in range(limit):
            logits = engine.model(**batch, decoder_input_ids=torch.tensor([history])).logits[0, -1].float()
            scores = transformers_scores(logits, history, {**settings, "sample": True})
            history.append(int(torch.multinomial(scores.softmax(-1), 1, generator=generator)))
            if history[-1] == engine.tokenizer.eos_token_id:
                break
    return engine.tokenizer.decode(history[1:], skip_special_tokens=True).strip()


def test_sampled_requests_in_one_shared_batch_equal_their_seeded_draws_alone(answering_engine):
    engine = answering_engine
    settings = [
        {"temperature": 0.7, "top_k": 50, "top_p": 0.8, "no_repeat_ngram_size": 4},  # my_generate's sampling
        {"temperature": 1.5, "top_k": 20, "top_p": 1.0, "no_repeat_ngram_size": 0},
        {"temperature": 1.0, "top_k": 0, "top_p": 0.5, "repetition_penalty": 1.3, "no_repeat_ngram_size": 0},
    ]
    prompts, seeds = PROMPTS[:3], [11, 12, 13]
    expected = [sampled_alone(engine, p, 24, seed, s) for p, seed, s in zip(prompts, seeds, settings)]
    submitted = [{"search_type": "sampling", "seed": seed, **s} for seed, s in zip(seeds, settings)]
    generator = BatchedGenerator(engine.model, engine.tokenizer, engine.max_len)
    try:
        results, _ = submit_all(generator, prompts, [24] * 3, stagger=0, settings=submitted)
        with pytest.raises(ValueError, match="not batched"):
            generator.submit("你好", print, 4, search_type="beam")
    finally:
        generator.close()
    assert [r.text for r in results] == expected


def transformers_scores(logits, history: list[int], settings: dict):
    """The oracle: transformers' own processors and warpers, in generate's order, on the row alone."""
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors = LogitsProcessorList()
    if settings.get("repetition_penalty", 1.0) != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(settings["repetition_penalty"]))
    if settings.get("no_repeat_ngram_size"):
        processors.append(NoRepeatNGramLogitsProcessor(settings["no_repeat_ngram_size"]))
    if settings.get("sample"):  # generate leaves out a warper whose setting changes nothing
        processors.append(TemperatureLogitsWarper(settings["temperature"]))
        if settings["top_k"]:
            processors.append(TopKLogitsWarper(settings["top_k"]))
        if settings["top_p"] < 1.0:
            processors.append(TopPLogitsWarper(settings["top_p"]))
    return processors(torch.tensor([history]), logits.clone().unsqueeze(0))[0]


def test_each_rows_scores_equal_transformers_processors():
    """Penalties, n-gram blocking, temperature, top-k and top-p of one row, on random logits and histories that
    repeat (small vocabulary), against transformers' logits processors."""
    generator = torch.Generator().manual_seed(0)
    cases = 0
    for case in range(300):
        logits = torch.randn(40, generator=generator) * 3
        history = [
            0,
            *torch.randint(
                2, 12, (int(torch.randint(0, 16, (1,), generator=generator)),), generator=generator
            ).tolist(),
        ]
        settings = {"repetition_penalty": [1.0, 1.3, 0.8][case % 3], "no_repeat_ngram_size": [0, 2, 3, 4][case % 4]}
        if case % 2:
            settings |= {"sample": True, "temperature": [0.7, 1.0, 1.5][case % 3], "top_k": [0, 5, 50][case % 3],
                         "top_p": [1.0, 0.8, 0.5][(case // 2) % 3]}  # fmt: skip
        ours = next_token_scores(logits, history, settings)
        expected = transformers_scores(logits, history, settings)
        assert torch.equal(torch.isinf(ours), torch.isinf(expected)), (case, history, settings)
        finite = ~torch.isinf(expected)
        torch.testing.assert_close(ours[finite], expected[finite], msg=f"case {case}: {settings}")
        cases += int((~finite).any())
    assert cases > 100  # many cases blocked or filtered something


def test_streamed_pieces_never_change_even_when_a_byte_run_turns_out_invalid(tokenizer_dir):
    """Three byte-fallback tokens spell 兴; a fourth byte that starts a character which never completes turns the
    whole run into U+FFFD. A piece handed over after the third byte would have said 兴 for good."""
    from sccl_hf.engine import IncrementalText
    from sccl_hf.model import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    byte = lambda b: tokenizer.convert_tokens_to_ids(f"<0x{b:02X}>")  # noqa: E731
    plain = tokenizer("好的", add_special_tokens=False)["input_ids"]
    valid, invalid = [byte(b) for b in "兴".encode()], [byte(b) for b in "兴".encode()] + [byte(0xE8)]
    for ids in (plain + valid + plain, plain + invalid + plain, plain + invalid, valid + plain + valid):
        answer = IncrementalText(tokenizer)
        pieces = [answer.add(i) for i in ids] + [answer.finish()]
        assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True), ids
    assert tokenizer.decode(plain + invalid, skip_special_tokens=True).endswith("\ufffd" * 4)  # the run, spoilt
