from collections import defaultdict

import pytest

from sccl_hf.demo_corpus import build_corpus, number_words


@pytest.fixture(scope="module")
def corpus():
    return build_corpus(seed=0)


@pytest.mark.parametrize(("n", "words"), [(0, "零"), (7, "七"), (10, "十"), (15, "十五"), (40, "四十"), (99, "九十九")])
def test_number_words(n, words):
    assert number_words(n) == words


def test_held_out_questions_are_never_asked_in_training(corpus):
    train_prompts = {r["prompt"] for r in corpus["sft"]} | {r["prompt"] for r in corpus["pretrain"]}
    assert corpus["held_out"] and not {r["prompt"] for r in corpus["held_out"]} & train_prompts


def test_every_held_out_answer_is_taught_in_another_phrasing(corpus):
    # The fact behind each held-out question appears in SFT with the same answer (asked differently).
    answers = defaultdict(set)
    for row in corpus["sft"]:
        answers[row["response"]].add(row["prompt"])
    assert all(answers[row["response"]] for row in corpus["held_out"])


def test_preference_pairs_reject_a_wrong_answer(corpus):
    assert len(corpus["dpo"]) > 100
    assert all(r["chosen"] != r["rejected"] for r in corpus["dpo"])


def test_corpus_is_deterministic_for_a_seed():
    assert build_corpus(seed=3) == build_corpus(seed=3) != build_corpus(seed=4)
