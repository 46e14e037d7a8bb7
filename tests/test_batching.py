"""Continuous batching: requests joining and leaving one decoding loop get the answers they would get alone."""

import threading
import time

import pytest

from sccl_hf.batching import BatchedGenerator
from sccl_hf.engine import Engine, GenerationCancelled

PROMPTS = ["浙江的省会是哪里？", "大的反义词是什么？", "3加5等于多少？", "把37写成汉字。", "江苏的省会是哪里？",
           "高的反义词是什么？", "十二加三等于多少？", "你好"]  # fmt: skip


@pytest.fixture(scope="module")
def random_engine(tiny_model_dir):
    return Engine.load(tiny_model_dir, "cpu")  # random weights: long answers, every one different


def submit_all(generator, prompts, max_new_tokens, stagger=0.02, **settings):
    results, pieces = [None] * len(prompts), [[] for _ in prompts]

    def run(i):
        time.sleep(stagger * i)  # joining while others are mid-answer
        results[i] = generator.submit(prompts[i], pieces[i].append, max_new_tokens, **settings)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results, pieces


def test_greedy_answers_equal_each_request_alone(random_engine):
    expected = random_engine.answer(PROMPTS, max_new_tokens=24, batch_size=1)
    generator = BatchedGenerator(random_engine.model, random_engine.tokenizer, random_engine.max_len)
    try:
        results, pieces = submit_all(generator, PROMPTS, 24)
    finally:
        generator.close()
    assert [r.text for r in results] == [a.text for a in expected]
    assert ["".join(p).strip() for p in pieces] == [r.text for r in results]  # streamed as produced
    assert [r.finish_reason == "stop" for r in results] == [a.ended for a in expected]
    # one loop served them all: far fewer steps than the tokens answered
    assert generator.steps < sum(r.completion_tokens for r in results) / 2


def test_a_cancelled_request_leaves_and_the_others_finish(random_engine):
    alone = random_engine.answer(PROMPTS, max_new_tokens=40, batch_size=1)
    leaver = next(p for p, a in zip(PROMPTS, alone) if not a.ended)  # an answer that would run the full 40 steps
    others = [p for p in PROMPTS if p != leaver][:3]
    expected = [a.text for p, a in zip(PROMPTS, alone) if p in others]
    generator = BatchedGenerator(random_engine.model, random_engine.tokenizer, random_engine.max_len)
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
        results, _ = submit_all(generator, others, 40)
    finally:
        for thread in threads:
            thread.join(timeout=60)
        generator.close()
    assert 5 <= outcome["left_at_step"] < 40
    assert [r.text for r in results] == expected


def test_per_request_settings_in_one_batch(random_engine):
    generator = BatchedGenerator(random_engine.model, random_engine.tokenizer, random_engine.max_len)
    tokenizer = random_engine.tokenizer
    try:
        plain, _ = submit_all(generator, PROMPTS[:2], 40, stagger=0)
        blocked, _ = submit_all(generator, PROMPTS[:2], 40, stagger=0, no_repeat_ngram_size=2)
        sampled, _ = submit_all(generator, PROMPTS[:2], 8, stagger=0, search_type="sampling", temperature=0.7)
    finally:
        generator.close()
    for result in blocked:
        ids = tokenizer(result.text, add_special_tokens=False)["input_ids"]
        assert len(ids) > 5
    assert [r.text for r in blocked] != [r.text for r in plain]  # the random model repeats itself otherwise
    assert all(r.completion_tokens <= 8 for r in sampled)
    with pytest.raises(ValueError, match="not batched"):
        generator.submit("你好", print, 4, search_type="beam")
