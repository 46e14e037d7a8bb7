"""Cleaning rules for prompt/response rows: each one switchable in the recipe, and each one counted.

Rewrites run first, in this order (each counts the rows it changed):
  nfkc                   Unicode NFKC (full-width letters and digits to half-width; it also turns full-width
                         punctuation into ASCII, which `chinese_punctuation` turns back inside Chinese text)
  traditional_to_simplified   OpenCC t2s
  strip_html             tags (<p>, <br/>, <!-- -->) and entities (&amp; -> &)
  strip_urls             http(s):// and www. addresses
  strip_control          control and format characters (keeps newline and tab)
  collapse_punctuation   a run of one punctuation mark becomes one (！！！ -> ！); …… and —— stay as pairs
  chinese_punctuation    , . : ; ! ? ( ) next to a Chinese character become ，。：；！？（）
Then filters (each drops a row under its own reason): prompt and response length, a response that repeats the
prompt, and the share of CJK characters.

Code is kept byte for byte: rewrites and `tidy` change only the prose around fenced blocks (``` ... ```) and
indented code (see `code_spans`), so a Python answer keeps its indentation, its spaces and its ASCII punctuation.
"""

import html
import itertools
import re
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_CHAR = re.compile(f"[{_CJK}]")
_HTML_TAG = re.compile(r"<!--.*?-->|</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]*)?/?>", re.S)
_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"'，。、；！？（）【】《》]+", re.I)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")
_EN_TO_ZH = {",": "，", ".": "。", ":": "：", ";": "；", "!": "！", "?": "？", "(": "（", ")": "）"}
# an ASCII mark with a Chinese character on either side ("." only after one: 3.14 and a.b stay)
_EN_PUNCT = re.compile(rf"(?<=[{_CJK}])[,.:;!?()]|[,:;!?()](?=[{_CJK}])")
_REPEATED = re.compile(r"([，。、；：！？,.;:!?~～·])\1+|(…){3,}|(—){3,}")
_SPACE_RUNS = re.compile(r"[ \t\u3000]+")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_INDENTED = re.compile(r"^(?: {2,}|\t)\S")
# the line that opens an indented block: `def f(x):`, `if a > b：`, `int main() {`, `items = [`
_OPENER = re.compile(r"[:：{(\[,\\]\s*$")


@dataclass
class CleaningArguments:
    """Cleaning switches and limits (the `data` stage's recipe keys)."""

    nfkc: bool = True
    traditional_to_simplified: bool = True
    strip_html: bool = True
    strip_urls: bool = True
    strip_control: bool = True
    chinese_punctuation: bool = True
    collapse_punctuation: bool = True
    min_prompt_chars: int = field(default=1, metadata={"help": "drop rows whose prompt is shorter"})
    max_prompt_chars: int | None = field(default=None, metadata={"help": "drop rows whose prompt is longer"})
    min_response_chars: int = field(default=1, metadata={"help": "drop rows whose response is shorter"})
    max_response_chars: int | None = field(default=None, metadata={"help": "drop rows whose response is longer"})
    drop_response_repeats_prompt: bool = field(
        default=True, metadata={"help": "drop rows whose response is the prompt again (ignoring punctuation)"}
    )
    min_cjk_ratio: float = field(
        default=0.0, metadata={"help": "drop rows whose share of CJK characters (of all non-space) is lower"}
    )

    @cached_property
    def opencc(self):
        import opencc

        return opencc.OpenCC("t2s")

    def __getstate__(self):  # the OpenCC converter is rebuilt in each worker process
        state = dict(self.__dict__)
        state.pop("opencc", None)
        return state


def _collapse(match: re.Match) -> str:
    if match.group(1):
        return match.group(1)
    return "……" if match.group(2) else "——"


def code_spans(text: str) -> list[tuple[bool, str]]:
    """The text cut at line boundaries into (is_code, part), in order; the parts join back to the text.

    Code is a fenced block (from a ``` or ~~~ line to its closing line, or to the end when it is not closed), or
    an indented block: lines indented by two or more spaces or a tab, blank lines between them, and the line that
    opens them when it ends like a block opener (`:`, `：`, `{`, `(`, `[`, `,`). Prose indented on its own (a
    paragraph starting with spaces after a full sentence) stays prose. Hand-written: markdown parsers find fences
    but not the unfenced, machine-translated code of the public instruction sets (`def 阶乘（n）：` + 4 spaces)."""
    lines = text.split("\n")
    code = [False] * len(lines)
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence:
            end = next((j for j in range(index + 1, len(lines)) if lines[j].lstrip().startswith(fence.group(1))), None)
            stop = len(lines) - 1 if end is None else end
            code[index : stop + 1] = [True] * (stop + 1 - index)
            index = stop + 1
            continue
        if _INDENTED.match(lines[index]) and index > 0 and (code[index - 1] or _OPENER.search(lines[index - 1])):
            start = index if code[index - 1] else index - 1
            stop = index
            while stop + 1 < len(lines) and (_INDENTED.match(lines[stop + 1]) or not lines[stop + 1].strip()):
                stop += 1
            while stop > index and not lines[stop].strip():  # trailing blank lines are prose again
                stop -= 1
            code[start : stop + 1] = [True] * (stop + 1 - start)
            index = stop + 1
            continue
        index += 1
    runs = itertools.groupby(zip(lines, code), key=lambda pair: pair[1])
    return [(is_code, "\n".join(line for line, _ in run)) for is_code, run in runs]


def outside_code(rewrite: callable) -> callable:
    """`rewrite` applied to the prose of a text only; code parts are kept as they are."""

    def apply(text: str) -> str:
        if "\n" not in text and "`" not in text:  # one line without a fence: prose only, the common case
            return rewrite(text)
        return "\n".join(part if is_code else rewrite(part) for is_code, part in code_spans(text))

    return apply


def rewrites(args: CleaningArguments) -> list[tuple[str, callable]]:
    """(name, text -> text) for each switched-on rewrite, in the order they run; each leaves code as it is."""
    steps = []
    if args.nfkc:
        steps.append(("nfkc", lambda t: unicodedata.normalize("NFKC", t)))
    if args.traditional_to_simplified:
        steps.append(("traditional_to_simplified", lambda t: args.opencc.convert(t)))
    if args.strip_html:
        steps.append(("strip_html", lambda t: html.unescape(_HTML_TAG.sub("", t)) if ("<" in t or "&" in t) else t))
    if args.strip_urls:
        steps.append(("strip_urls", lambda t: _URL.sub("", t)))
    if args.strip_control:
        steps.append(("strip_control", lambda t: _CONTROL.sub("", t)))
    if args.collapse_punctuation:  # before chinese_punctuation: "？？？" is "???" after NFKC
        steps.append(("collapse_punctuation", lambda t: _REPEATED.sub(_collapse, t)))
    if args.chinese_punctuation:
        steps.append(("chinese_punctuation", lambda t: _EN_PUNCT.sub(lambda m: _EN_TO_ZH[m.group(0)], t)))
    return [(name, outside_code(rewrite)) for name, rewrite in steps]


def _tidy_prose(text: str) -> str:
    return "\n".join(_SPACE_RUNS.sub(" ", line).strip() for line in text.split("\n"))


def tidy(text: str) -> str:
    """Runs of spaces to one in prose, and no blank edges (always applied: not a rule a user would switch off).
    Code keeps its indentation and spacing; only blank lines around the whole text go."""
    # prose lines are stripped already: what is left at the edges is blank lines
    return "\n".join(part if is_code else _tidy_prose(part) for is_code, part in code_spans(text)).strip("\n")


def cjk_ratio(text: str) -> float:
    chars = sum(1 for c in text if not c.isspace())
    return len(_CJK_CHAR.findall(text)) / chars if chars else 0.0


def _bare(text: str) -> str:
    return "".join(c for c in text if c.isalnum())


def drop_reason(prompt: str, answers: list[str], args: CleaningArguments) -> str | None:
    """Why a cleaned row is dropped (None: kept). `answers`: the response, or chosen and rejected."""
    if len(prompt) < args.min_prompt_chars:
        return "prompt too short"
    if args.max_prompt_chars is not None and len(prompt) > args.max_prompt_chars:
        return "prompt too long"
    if any(len(a) < args.min_response_chars for a in answers):
        return "response too short"
    if args.max_response_chars is not None and any(len(a) > args.max_response_chars for a in answers):
        return "response too long"
    if args.drop_response_repeats_prompt and any(_bare(a) == _bare(prompt) for a in answers):
        return "response repeats the prompt"
    if args.min_cjk_ratio > 0 and cjk_ratio(prompt + "".join(answers)) < args.min_cjk_ratio:
        return "too little CJK text"
    return None
