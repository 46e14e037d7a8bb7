"""One prompt renderer: the encoder text of a conversation, and the same text from the tokenizer's chat template."""

import pytest
from transformers import AutoTokenizer

from sccl_hf.prompt import PromptError, render_prompt

CONVERSATIONS = [
    [{"role": "user", "content": "浙江的省会是哪里？"}],
    [
        {"role": "system", "content": "你是一个助手。"},
        {"role": "user", "content": "大的反义词是什么？"},
        {"role": "assistant", "content": "小"},
        {"role": "user", "content": "高的反义词呢？"},
    ],
]


def test_a_single_question_is_its_own_text():
    assert render_prompt(CONVERSATIONS[0]) == "浙江的省会是哪里？"


def test_history_comes_before_the_question_one_turn_per_line():
    assert render_prompt(CONVERSATIONS[1]) == "你是一个助手。\n用户：大的反义词是什么？\n助手：小\n高的反义词呢？"


def test_the_oldest_turns_are_dropped_first_to_fit():
    messages = [
        {"role": "system", "content": "系统"},
        *[{"role": role, "content": f"第{i}轮"} for i in range(6) for role in ("user", "assistant")],
        {"role": "user", "content": "问题"},
    ]
    text = render_prompt(messages, fits=lambda t: len(t) <= 30)
    assert len(text) <= 30 and text.startswith("系统\n") and text.endswith("助手：第5轮\n问题")
    assert "第0轮" not in text
    # Nothing fits: the system message and the question stay, and the caller decides what to do.
    assert render_prompt(messages, fits=lambda t: False) == "系统\n问题"


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "empty"),
        ([{"role": "assistant", "content": "答"}], "last message must be the user's question"),
        ([{"role": "robot", "content": "hi"}], r"messages\[0\]\.role"),
        ([{"role": "user", "content": ["parts"]}], r"messages\[0\]\.content: expected text"),
    ],
)
def test_conversations_that_cannot_be_rendered_are_errors(messages, message):
    with pytest.raises(PromptError, match=message):
        render_prompt(messages)


@pytest.mark.parametrize("messages", CONVERSATIONS, ids=["single", "history"])
def test_a_saved_tokenizer_renders_the_same_text(tiny_model_dir, messages):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)  # as a downstream user loads it
    assert tokenizer.apply_chat_template(messages, tokenize=False) == render_prompt(messages)
