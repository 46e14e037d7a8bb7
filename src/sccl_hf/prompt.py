"""The one place where a conversation becomes the encoder's text.

SFT data, DPO, chat, serving and evaluation all call `render_prompt`, and the same rule is saved with every
tokenizer as its `chat_template`, so `tokenizer.apply_chat_template(messages, tokenize=False)` gives a downstream
user the very text the model was trained on.

The rule: a single question is its own text (that is what pretraining and SFT rows hold). Earlier turns come
before it, one per line, as `用户：…` and `助手：…`; a system message leads as it is. When the whole conversation
is too long for the model, the oldest turns are dropped first (the system message and the question stay).
"""

from collections.abc import Callable

ROLE_PREFIX = {"system": "", "user": "用户：", "assistant": "助手："}

# The same rule in Jinja, for `tokenizer.apply_chat_template` (no truncation there: transformers renders the
# template before it tokenizes).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.last -%}{{ message['content'] }}"
    "{%- elif message['role'] == 'system' -%}{{ message['content'] + '\n' }}"
    "{%- elif message['role'] == 'user' -%}{{ '用户：' + message['content'] + '\n' }}"
    "{%- else -%}{{ '助手：' + message['content'] + '\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


class PromptError(ValueError):
    """A conversation that cannot be rendered (no question at its end, an unknown role, non-text content)."""


def _check(messages: list[dict]) -> None:
    if not messages:
        raise PromptError("messages: the conversation is empty")
    for index, message in enumerate(messages):
        if message.get("role") not in ROLE_PREFIX:
            raise PromptError(
                f"messages[{index}].role: expected system, user or assistant, got {message.get('role')!r}"
            )
        if not isinstance(message.get("content"), str):
            raise PromptError(f"messages[{index}].content: expected text, got {type(message.get('content')).__name__}")
    if messages[-1]["role"] != "user":
        raise PromptError(f"messages: the last message must be the user's question, got {messages[-1]['role']!r}")


def _render(messages: list[dict]) -> str:
    *history, question = messages
    return "".join(ROLE_PREFIX[m["role"]] + m["content"] + "\n" for m in history) + question["content"]


def render_prompt(messages: list[dict], fits: Callable[[str], bool] | None = None) -> str:
    """The encoder text of a conversation ({"role", "content"} dicts ending with the user's question).

    `fits(text)` (for example: its token count is within the model's limit) decides how much history is kept:
    the oldest non-system turns are dropped until it holds. The question itself is never cut here; a caller
    that gets back a text that still does not fit decides whether to truncate or refuse it."""
    _check(messages)
    system = [m for m in messages[:-1] if m["role"] == "system"]
    turns = [m for m in messages[:-1] if m["role"] != "system"]
    text = _render([*system, *turns, messages[-1]])
    while fits is not None and turns and not fits(text):
        turns = turns[1:]
        text = _render([*system, *turns, messages[-1]])
    return text


def install_chat_template(tokenizer) -> None:
    """Give a tokenizer the project's chat template (saved with it as `chat_template`)."""
    tokenizer.chat_template = CHAT_TEMPLATE
