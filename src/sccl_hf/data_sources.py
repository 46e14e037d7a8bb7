"""Raw public data sets into rows: one `SourceSpec` per source, written in a recipe, never in code.

A source says where its files are (`files`), how they are stored (`format`), what a record holds (`kind`) and
which fields become the prompt and the response (a field name, a `{field}` template, or a list of templates of
which each row gets one, chosen by its position). `where` keeps only the records a condition holds for, and
`max_rows` stops after that many rows.

Formats: `jsonl` (JSON lines), `json` (a JSON array, or JSON lines: the first character decides), `csv` and `tsv`
(any `encoding`, with or without a header), `parquet`, `text` (documents separated by blank lines: the first line
is the title, the rest the body) and `wikiextractor` (`<doc ... title="...">` blocks, as WikiExtractor writes them;
its `--json` output is `jsonl`).

Kinds: `pair` (prompt/response, or prompt/chosen/rejected when `chosen` is set), `sharegpt` (one row per assistant
turn, earlier turns rendered as history by `prompt.render_prompt`), `sharegpt_preference` (`{conversations,
chosen, rejected}` to prompt/chosen/rejected), `duie` (DuIE triples to `[(s,p,o),(s,p,o)]`), `document` (the
`text` and `wikiextractor` formats: title and body).

Reading never stops at a bad record: undecodable bytes, a malformed line or a missing field becomes a `BadRecord`
naming the file, the line and the reason, and the caller counts it. A file that cannot be opened or parsed at
all is a `DataError` naming it.
"""

import csv
import difflib
import json
import operator
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from sccl_hf.errors import DataError
from sccl_hf.prompt import PromptError, render_prompt

FORMATS = ("jsonl", "json", "csv", "tsv", "parquet", "text", "wikiextractor")
KINDS = ("pair", "sharegpt", "sharegpt_preference", "duie", "document")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


@dataclass
class Record:
    """One row out of a source: prompt and response (or chosen and rejected), and where it came from."""

    prompt: str
    response: str
    source: str
    file: str
    line: int
    chosen: str | None = None
    rejected: str | None = None
    history: str = ""  # earlier turns, rendered: the model's prompt is history + prompt


@dataclass
class BadRecord:
    """A record that could not be read, with the reason it is counted under."""

    reason: str
    source: str
    file: str
    line: int
    raw: str = ""


_CONDITION = re.compile(r"^\s*([\w.@-]+)\s*(>=|<=|==|!=|>|<|not contains|contains|not in|in)\s*(.+?)\s*$")


def _contains(field_value, words) -> bool:
    """Whether a field's text holds any of the words (a field that is not text is read as its JSON text, so a
    ShareGPT `conversations` list can be searched too)."""
    text = field_value if isinstance(field_value, str) else json.dumps(field_value, ensure_ascii=False)
    return any(str(word) in text for word in (words if isinstance(words, list) else [words]))


_OPERATORS = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
    "in": lambda a, b: a in b,
    "not in": lambda a, b: a not in b,
    "contains": _contains,
    "not contains": lambda a, b: not _contains(a, b),
}


@dataclass
class Condition:
    """`field op value` from a source's `where:`, e.g. `star >= 5`, `class in [open_qa, math]` or
    `instruction not contains [翻译, translate]` (a substring, any of a list)."""

    text: str

    def __post_init__(self):
        match = _CONDITION.match(self.text)
        if not match:
            raise ValueError(
                f"'{self.text}' is not 'field op value' (op: >=, <=, >, <, ==, !=, in, not in, contains, not contains)"
            )
        self.field, self.op, value = match.groups()
        self.value = yaml.safe_load(value)

    def holds(self, record: dict) -> bool | str:
        """True or False, or the reason the record cannot be tested."""
        if self.field not in record:
            return f"missing field '{self.field}'"
        value = record[self.field]
        if isinstance(self.value, (int, float)) and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return f"where: '{self.field}' is not a number"
        try:
            return bool(_OPERATORS[self.op](value, self.value))
        except TypeError:
            return f"where: cannot compare '{self.field}'"


@dataclass
class SourceSpec:
    name: str
    format: str
    files: list[str]
    kind: str = "pair"
    prompt: str | list[str] = "prompt"
    response: str = "response"
    chosen: str | None = None
    rejected: str | None = None
    conversations: str = field(default="conversations", metadata={"help": "sharegpt kinds: the turns' field"})
    where: list[str] = field(default_factory=list)
    max_rows: int | None = None
    encoding: str = "utf-8"
    header: bool = True
    columns: list[str] | None = field(default=None, metadata={"help": "csv/tsv: field names (no header, or renamed)"})
    max_response_chars: int | None = field(default=None, metadata={"help": "cut the response (documents: first N)"})

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"format: '{self.format}' is not one of {', '.join(FORMATS)}")
        if self.kind not in KINDS:
            raise ValueError(f"kind: '{self.kind}' is not one of {', '.join(KINDS)}")
        if (self.format in ("text", "wikiextractor")) != (self.kind == "document"):
            raise ValueError("kind: 'document' goes with format 'text' or 'wikiextractor', and only with them")
        if (self.chosen is None) != (self.rejected is None):
            raise ValueError("chosen and rejected: give both (a preference pair) or neither")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"max_rows: {self.max_rows} is out of range (1 or more)")
        self.templates = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
        if not self.templates:
            raise ValueError("prompt: give a field name, a template or a list of templates")
        self.conditions = [Condition(text) for text in ([self.where] if isinstance(self.where, str) else self.where)]
        if isinstance(self.files, str):
            self.files = [self.files]
        self.paths = _resolve(self.files)

    @property
    def structured_response(self) -> bool:
        """The response is a format the model must learn as it is (DuIE's `[(s,p,o)]`): punctuation and markup
        rewrites leave it alone."""
        return self.kind == "duie"

    @property
    def preference(self) -> bool:
        return self.kind == "sharegpt_preference" or self.chosen is not None


def _resolve(patterns: list[str]) -> list[Path]:
    from sccl_hf.recipes import resolve_files

    suffixes = (".json", ".jsonl", ".csv", ".tsv", ".txt", ".parquet", "")
    return resolve_files(patterns, "files", suffixes=suffixes)


def parse_sources(items: list) -> list[SourceSpec]:
    """The recipe's `sources:` list into SourceSpecs; an error names the source and the key."""
    if not isinstance(items, list) or not items:
        raise ValueError("sources: give a list of sources (each: name, format, files, ...)")
    known = [f.name for f in fields(SourceSpec)]
    specs, names = [], set()
    for index, item in enumerate(items):
        where = f"sources[{index}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: a source is a mapping (name, format, files, ...), got {item!r}")
        where = f"sources[{index}] ({item.get('name', 'no name')})"
        for key in item:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                raise ValueError(f"{where}: unknown key '{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        missing = [k for k in ("name", "format", "files") if k not in item]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        if item["name"] in names:
            raise ValueError(f"{where}: the name '{item['name']}' is given twice")
        names.add(item["name"])
        try:
            specs.append(SourceSpec(**item))
        except (ValueError, TypeError, FileNotFoundError) as error:
            raise ValueError(f"{where}: {error}") from None
    if len({spec.preference for spec in specs}) > 1:
        raise ValueError("sources: mixes prompt/response and prompt/chosen/rejected sources; run them separately")
    return specs


# -- reading ----------------------------------------------------------------------------------------------------


def _decoded_lines(path: Path, encoding: str, bad: list, part: tuple = (0, 1)) -> Iterator[tuple[int, str]]:
    """(line number, text) of a file read as bytes; a line that does not decode is reported in `bad`, not raised:
    one broken line must not cost the rest of the file. (Splitting on b'\\n' is safe for UTF-8 and GB18030.)
    `part` (index, count): only every count-th line from the index-th, so several tasks share one file."""
    index, count = part
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if count > 1 and (number - 1) % count != index:
                continue
            try:
                yield number, raw.decode(encoding)
            except UnicodeDecodeError as error:
                bad.append(
                    (number, f"undecodable bytes ({encoding})", repr(raw[max(0, error.start - 10) : error.end + 10]))
                )


def _json_records(path: Path, bad: list, part: tuple = (0, 1)) -> Iterator[tuple[int, object]]:
    with open(path, "rb") as handle:
        head = handle.read(4096).lstrip()
    if head.startswith(b"["):  # a JSON array: parsed whole (a broken array has no lines to skip)
        try:
            items = json.loads(path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"{path}: not a readable JSON array ({error})") from None
        yield from ((n, item) for n, item in enumerate(items, start=1) if (n - 1) % part[1] == part[0])
        return
    for number, line in _decoded_lines(path, "utf-8", bad, part):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            bad.append((number, "malformed JSON line", f"{error.msg}: {line[:80]}"))


def _csv_records(path: Path, spec: SourceSpec, bad: list) -> Iterator[tuple[int, object]]:
    delimiter = "\t" if spec.format == "tsv" else ","
    lines = (text for _, text in _decoded_lines(path, spec.encoding, bad))
    reader = csv.reader(lines, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
    names = spec.columns
    try:
        for row in reader:
            if spec.header and names is None:
                names = row
                continue
            if spec.header and spec.columns is not None and reader.line_num == 1:
                continue
            if names is None:
                names = [f"column{i}" for i in range(len(row))]
            if not row:
                continue
            if len(row) != len(names):
                bad.append(
                    (reader.line_num, f"malformed row ({len(row)} fields, expected {len(names)})", str(row)[:80])
                )
                continue
            yield reader.line_num, dict(zip(names, row))
    except csv.Error as error:
        raise DataError(f"{path}, line {reader.line_num}: not readable as {spec.format} ({error})") from None


def _parquet_records(path: Path, part: tuple = (0, 1)) -> Iterator[tuple[int, object]]:
    import numpy as np
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a file that is not parquet
        raise DataError(f"{path}: not a readable parquet file ({error})") from None
    start = 0
    for batch in parquet.iter_batches(batch_size=4096):
        numbers = np.arange(start, start + batch.num_rows)
        start += batch.num_rows
        mine = numbers[numbers % part[1] == part[0]]
        if not mine.size:
            continue
        for number, row in zip(mine, batch.take(mine - numbers[0]).to_pylist()):
            yield int(number) + 1, row


_DOC_START = re.compile(r'<doc\b[^>]*\btitle="([^"]*)"[^>]*>')


def read_documents(path: Path, bad: list, encoding: str = "utf-8", wiki: bool = False) -> Iterator[tuple[int, dict]]:
    """(first line, {title, text}) of each document: blank-line separated blocks whose first line is the title
    (the `text` format; also `.txt` training files, see `tables`) or <doc> ... </doc> (wikiextractor). Undecodable
    lines are reported in `bad` as (line, reason, raw)."""
    title, body, start = None, [], 0
    for number, line in _decoded_lines(path, encoding, bad):
        text = line.strip()
        if wiki:
            match = _DOC_START.match(text)
            if match:
                title, body, start = match.group(1), [], number
                continue
            if text == "</doc>":
                if title is not None:
                    yield start, {"title": title, "text": "".join(b for b in body if b != title)}
                title = None
                continue
            if title is not None and text:
                body.append(text)
        elif not text:
            if title is not None:
                yield start, {"title": title, "text": "".join(body)}
            title = None
        elif title is None:
            title, body, start = text.rstrip(":："), [], number
        else:
            body.append(text)
    if title is not None and not wiki:
        yield start, {"title": title, "text": "".join(body)}


SPLITTABLE_FORMATS = ("jsonl", "parquet")  # line- or row-level: several tasks can share one file cheaply


def _raw_records(path: Path, spec: SourceSpec, bad: list, part: tuple = (0, 1)) -> Iterator[tuple[int, object]]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror})") from None
    if spec.format in ("jsonl", "json"):
        return _json_records(path, bad, part)
    if spec.format == "parquet":
        return _parquet_records(path, part)
    if part[1] > 1:
        raise ValueError(f"{spec.format} files are read whole, by one task")
    if spec.format in ("csv", "tsv"):
        return _csv_records(path, spec, bad)
    return read_documents(path, bad, spec.encoding, spec.format == "wikiextractor")


class _MissingField(KeyError):
    pass


class _Fields(dict):
    def __missing__(self, key):
        raise _MissingField(key)


def _text(record: dict, spec_value: str, position: int = 0, templates: list[str] | None = None) -> str:
    """A field's text, or a `{field}` template filled from the record (empty fields and their lines dropped)."""
    template = templates[position % len(templates)] if templates else spec_value
    if "{" not in template:
        if template not in record:
            raise _MissingField(template)
        value = record[template]
        return "" if value is None else str(value)
    filled = template.format_map(_Fields({k: "" if v is None else v for k, v in record.items()}))
    return "\n".join(line for line in filled.split("\n") if line.strip())


def _sharegpt_messages(turns, source) -> list[dict]:
    if not isinstance(turns, list):
        raise ValueError("conversations is not a list")
    messages = []
    for turn in turns:
        role = (
            SHAREGPT_ROLES.get(str(turn.get("from", turn.get("role", ""))).lower()) if isinstance(turn, dict) else None
        )
        content = turn.get("value", turn.get("content")) if isinstance(turn, dict) else None
        if role is None or not isinstance(content, str):
            raise ValueError(f"a turn is not {{from: human|gpt|system, value: text}}: {str(turn)[:60]}")
        messages.append({"role": role, "content": content})
    return messages


def _answer_text(value) -> str:
    """A preference answer: plain text, or a ShareGPT turn {from, value}."""
    if isinstance(value, dict):
        value = value.get("value", value.get("content"))
    if not isinstance(value, str):
        raise ValueError("chosen/rejected is not text")
    return value


def _duie_response(spo_list) -> str:
    triples = []
    for spo in spo_list:
        obj = spo["object"]
        obj = obj.get("@value", next(iter(obj.values()), "")) if isinstance(obj, dict) else obj
        triples.append(f"({spo['subject']},{spo['predicate']},{obj})")
    return "[" + ",".join(triples) + "]"


def _history_and_question(messages: list[dict]) -> tuple[str, str]:
    """The project's one prompt renderer, split into the earlier turns and the question (duplicates are judged
    on the question and its answer: later turns of one conversation share their history)."""
    full = render_prompt(messages)
    question = messages[-1]["content"]
    return full[: len(full) - len(question)], question


def _records_of(raw: dict, spec: SourceSpec, position: int) -> list[tuple]:
    """(history, prompt, response, chosen, rejected) rows of one raw record; raises _MissingField or ValueError."""
    if spec.kind == "sharegpt":
        messages = _sharegpt_messages(raw.get(spec.conversations), spec.name)
        rows = []
        for index, message in enumerate(messages):
            if message["role"] == "assistant" and index > 0 and messages[index - 1]["role"] == "user":
                rows.append((*_history_and_question(messages[:index]), message["content"], None, None))
        if not rows:
            raise ValueError("no assistant turn that answers a user turn")
        return rows
    if spec.kind == "sharegpt_preference":
        messages = _sharegpt_messages(raw.get(spec.conversations), spec.name)
        chosen, rejected = _answer_text(raw.get("chosen")), _answer_text(raw.get("rejected"))
        return [(*_history_and_question(messages), "", chosen, rejected)]
    prompt = _text(raw, spec.prompt, position, spec.templates)
    if spec.kind == "duie":
        spo_list = raw.get("spo_list")
        if spo_list is None:
            raise _MissingField("spo_list")
        return [("", prompt, _duie_response(spo_list), None, None)]
    if spec.preference:
        return [("", prompt, "", _text(raw, spec.chosen), _text(raw, spec.rejected))]
    return [("", prompt, _text(raw, spec.response), None, None)]


def stable_position(text: str) -> int:
    """A number that depends only on the text (Python's hash() changes between processes)."""
    return zlib.crc32(text.encode("utf-8"))


def read_source(spec: SourceSpec, paths: list[Path] | None = None, part: tuple = (0, 1)) -> Iterator:
    """Records and BadRecords of a source (or of some of its files), in file order; stops after the source's
    `max_rows` records. `part` (index, count): this task's share of each file's lines or rows (JSON lines and
    parquet only)."""
    kept = 0
    limit = spec.max_rows
    for path in paths if paths is not None else spec.paths:
        bad: list = []
        for number, raw in _raw_records(path, spec, bad, part):
            while bad:
                line, reason, snippet = bad.pop(0)
                yield BadRecord(reason, spec.name, str(path), line, snippet)
            if not isinstance(raw, dict):
                yield BadRecord("not a mapping", spec.name, str(path), number, str(raw)[:80])
                continue
            failed = next((r for r in (c.holds(raw) for c in spec.conditions) if r is not True), None)
            if failed is False:
                yield BadRecord("where: condition not met", spec.name, str(path), number)
                continue
            if isinstance(failed, str):
                yield BadRecord(failed, spec.name, str(path), number, str(raw)[:80])
                continue
            try:
                rows = _records_of(raw, spec, stable_position(f"{path.name}:{number}"))
            except _MissingField as error:
                yield BadRecord(f"missing field '{error.args[0]}'", spec.name, str(path), number, str(raw)[:80])
                continue
            except (ValueError, TypeError, KeyError, AttributeError, PromptError) as error:
                yield BadRecord("malformed record", spec.name, str(path), number, f"{error}: {str(raw)[:80]}")
                continue
            for history, prompt, response, chosen, rejected in rows:
                if spec.max_response_chars and response:
                    response = response[: spec.max_response_chars]
                yield Record(prompt, response, spec.name, str(path), number, chosen, rejected, history)
                kept += 1
                if limit is not None and kept >= limit:
                    return
        for line, reason, snippet in bad:
            yield BadRecord(reason, spec.name, str(path), line, snippet)
