"""Reading prompt/response (and prompt/chosen/rejected) tables from parquet, JSON lines or JSON arrays, and
documents from plain text files (title -> body).

Bad rows never stop a run: a null, empty or non-string field, a line that is not valid UTF-8 or not valid JSON,
or a JSON value that is not an object is skipped and counted under its reason, with the file and line, whether
the table is read into memory or streamed. What stops a run, with the file named: a file that cannot be read at
all, a missing column, and a table with no usable row. Small data is read into memory; large data is streamed
with `datasets`, one shard per parquet row group (or JSON-lines file), so that under several processes
accelerate hands each process its own shards and no process reads another's rows.
"""

import json
import logging
import random
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from sccl_hf import span_corruption
from sccl_hf.data_sources import read_documents
from sccl_hf.errors import DataError

logger = logging.getLogger(__name__)


class SkippedRows:
    """Rows skipped while reading, by file and reason, with the first few places for each."""

    examples = 5

    def __init__(self):
        self.counts: dict[str, Counter] = defaultdict(Counter)
        self.places: dict[tuple[str, str], list[str]] = defaultdict(list)

    def add(self, path, reason: str, place: str) -> None:
        self.counts[str(path)][reason] += 1
        if len(self.places[str(path), reason]) < self.examples:
            self.places[str(path), reason].append(place)

    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    def describe(self, path) -> str:
        counts = self.counts.get(str(path), Counter())
        return "; ".join(
            f"{n} {reason} ({', '.join(self.places[str(path), reason])}{', ...' if n > self.examples else ''})"
            for reason, n in counts.most_common()
        )

    def summary(self) -> str:
        return "; ".join(f"{path}: {self.describe(path)}" for path in self.counts) or "no rows at all"


def parquet_file(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{path}: cannot be read as parquet ({error})") from error


def check_columns(paths: list[Path], columns: list[str]) -> None:
    """Raise naming the first file that lacks one of `columns` (reads only parquet metadata / a first row), or
    that cannot be read at all."""
    for path in paths:
        if path.suffix == ".txt":  # documents: title and body become the two columns (`_iter_text_rows`)
            continue
        if path.suffix == ".parquet":
            names = set(parquet_file(path).schema_arrow.names)
        else:
            first = next(_iter_json_rows(path, SkippedRows()), None)
            if first is None:  # no JSON object to read, and so no columns to miss
                continue
            names = set(first[1])
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; it has {sorted(names)}")


def _iter_json_rows(path: Path, skipped: SkippedRows) -> Iterator[tuple[str, dict]]:
    """(place, row) for each JSON object of a JSON-lines file or a JSON array file; bad lines are counted."""
    with open(path, "rb") as f:
        if path.suffix == ".json" and f.read(1) == b"[":  # a JSON array file: read whole
            f.seek(0)
            try:
                items = json.loads(f.read().decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as error:
                raise DataError(f"{path}: cannot be read as a JSON array ({error})") from error
            for index, item in enumerate(items):
                if isinstance(item, dict):
                    yield f"item {index}", item
                else:
                    skipped.add(path, "not a JSON object", f"item {index}")
            return
        f.seek(0)
        for number, raw in enumerate(f, start=1):
            place = f"line {number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                skipped.add(path, "invalid UTF-8", place)
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                skipped.add(path, "not valid JSON", place)
                continue
            if not isinstance(row, dict):
                skipped.add(path, "not a JSON object", place)
                continue
            yield place, row


def _iter_text_rows(path: Path, columns: list[str], skipped: SkippedRows) -> Iterator[tuple[str, dict]]:
    """(place, row) for each document of a plain text file, read as the data stage's `text` format reads it: the
    title in the first column (prompt), the body in the second (response). Span corruption joins them again."""
    bad = []
    for number, document in read_documents(path, bad):
        if document["text"].strip():
            yield f"line {number}", {columns[0]: document["title"], columns[1]: document["text"]}
        else:
            skipped.add(path, "a one-line document (its line is the title: no body)", f"line {number}")
    for number, reason, _ in bad:
        skipped.add(path, reason, f"line {number}")


def _shards(paths: list[Path]) -> list[tuple[str, int]]:
    """(file, parquet row group) pairs; a JSON-lines file is one shard (row group -1)."""
    shards = []
    for path in paths:
        if path.suffix == ".parquet":
            shards += [(str(path), g) for g in range(parquet_file(path).num_row_groups)]
        else:
            shards.append((str(path), -1))
    return shards


def _iter_shard_rows(path: str, row_group: int, columns: list[str], skipped: SkippedRows) -> Iterator[tuple[str, dict]]:
    if row_group >= 0:
        table = parquet_file(Path(path)).read_row_group(row_group, columns=list(columns))
        first = sum(parquet_file(Path(path)).metadata.row_group(g).num_rows for g in range(row_group))
        for index, row in enumerate(table.to_pylist()):
            yield f"row {first + index}", row
    elif path.endswith(".txt"):
        yield from _iter_text_rows(Path(path), columns, skipped)
    else:
        yield from _iter_json_rows(Path(path), skipped)


def _problem(row: dict, columns: list[str]) -> str | None:
    for column in columns:
        value = row.get(column)
        if value is None:
            return f"null {column}"
        if not isinstance(value, str):
            return f"non-string {column}"
        if not value.strip():
            return f"empty {column}"
    return None


def _generate_rows(shards: list[tuple[str, int]], columns: list[str], require_rows: bool = True) -> Iterator[dict]:
    """Valid rows of the shards. Invalid ones are skipped and counted by reason, one warning per file that had
    any; no valid row at all is an error naming the files and the counts (unless `require_rows` is False: a
    stream calls this once per shard, and one shard may well hold nothing usable)."""
    skipped, kept = SkippedRows(), 0
    for path, row_group in shards:
        before = skipped.total()
        for place, row in _iter_shard_rows(path, row_group, columns, skipped):
            problem = _problem(row, columns)
            if problem:
                skipped.add(path, problem, place)
            else:
                kept += 1
                yield {c: row[c] for c in columns}
        if skipped.total() > before:
            where = f" (row group {row_group})" if row_group > 0 else ""
            logger.warning("%s%s: skipped %s", path, where, skipped.describe(path))
    if kept == 0 and require_rows:
        files = sorted({path for path, _ in shards})
        raise DataError(f"no usable rows in {files} (columns {list(columns)}): {skipped.summary()}")


def load_table(
    paths: list[Path],
    columns: list[str],
    streaming: bool = False,
    shuffle_seed: int | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Rows of `columns` from `paths`, skipping invalid rows (counted and logged per file or row group).

    `shuffle_seed` shuffles a stream's shard order (its rows are shuffled in windows once tokenized, see
    `shuffle_windows`); an in-memory table is not shuffled, since the Trainer's sampler shuffles it every epoch.
    The shard order is the same in every pass over the stream, which keeps a resumed run's batches exact whatever
    pass it stopped in."""
    check_columns(paths, columns)
    features = datasets.Features({c: datasets.Value("string") for c in columns})
    shards = _shards(paths)
    if streaming:
        if shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(shards)
        # The stream must hold a usable row somewhere: read up to the first one now (normally the first row),
        # since the stream itself is read shard by shard, in other processes, and only once training starts.
        next(_generate_rows(shards, columns), None)
        table = datasets.IterableDataset.from_generator(
            _generate_rows,
            gen_kwargs={"shards": shards, "columns": tuple(columns), "require_rows": False},
            features=features,
        )  # columns as a tuple: a list in gen_kwargs would count as a list of shards
        return table
    return datasets.Dataset.from_list(list(_generate_rows(shards, columns)), features=features)


def mask_spans(ids: list[int], mask_id: int, rng: random.Random, density: float = 0.15, mean_span: float = 3.0):
    """`ids` (ending in [EOS], which is kept) with about `density` of its tokens hidden in spans of `mean_span`
    tokens on average, each span replaced by one `mask_id`: T5's span corruption, but the target is the whole text,
    so the decoder must read and copy the 85% it is shown."""
    body, eos = ids[:-1], ids[-1:]
    hidden = max(1, round(len(body) * density)) if len(body) > 1 else 0
    spans = max(1, round(hidden / mean_span)) if hidden else 0
    starts = sorted(rng.sample(range(len(body)), min(spans, len(body))))
    out, covered = [], 0
    for position, token in enumerate(body):
        if starts and position == starts[0]:
            starts.pop(0)
            covered = max(covered, position + max(1, round(rng.expovariate(1 / mean_span))))
            if not out or out[-1] != mask_id:
                out.append(mask_id)
            continue
        if position < covered:
            continue
        out.append(token)
    return out + eos


def table_rows(paths: list[Path], columns=("prompt", "response"), max_rows: int = 0) -> list[dict]:
    """The table's rows (bad rows skipped and counted), the first `max_rows` of them (0: all): what an
    evaluation reads."""
    rows = load_table(paths, list(columns)).to_list()
    return rows[:max_rows] if max_rows else rows


def tokenize_pairs(
    tokenizer,
    max_seq_len: int,
    prompt_column: str = "prompt",
    response_column: str = "response",
    reconstruction_share: float = 0.0,
    seed: int = 0,
    span_corruption_share: float = 0.0,
    noise_density: float = span_corruption.NOISE_DENSITY,
    mean_span: float = span_corruption.MEAN_SPAN,
):
    """A batched map function: prompt -> input_ids/attention_mask, response -> labels (both end in [EOS]).

    - `span_corruption_share`: that share of the rows (1.0: all) is read as one text, the prompt and the response
      on two lines, cut into pieces that fit `max_seq_len` once corrupted, and each piece becomes a span
      corruption row (`sccl_hf.span_corruption`). A row may so give several rows.
    - `reconstruction_share`: that share of the other rows has its prompt replaced by the response with spans
      masked (`mask_spans`): a reconstruction row, whose target is read mostly from the input.

    Both choices come from a hash of the row's text and `seed`: the same rows and masks in every epoch, process
    and resumed run."""
    sentinels = span_corruption.sentinel_ids(tokenizer) if span_corruption_share else []
    piece = span_corruption.piece_length(max_seq_len, noise_density, mean_span)
    shares = {"noise_density": noise_density, "mean_span": mean_span}

    def corrupted(text: str) -> list[tuple[list[int], list[int]]]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return [
            span_corruption.corrupt(
                part, sentinels, tokenizer.eos_token_id, span_corruption.row_rng(text, seed, k), **shares
            )
            for k, part in enumerate(span_corruption.pieces(ids, piece))
        ]

    def tokenize(batch: dict) -> dict:
        prompts, responses = batch[prompt_column], batch[response_column]
        corrupt_rows = [
            span_corruption_share >= 1.0
            or (
                span_corruption_share > 0
                and span_corruption.row_rng(p + "\n" + r, seed, -1).random() < span_corruption_share
            )
            for p, r in zip(prompts, responses)
        ]
        pairs = [k for k, corrupt in enumerate(corrupt_rows) if not corrupt]
        input_ids, attention_mask, labels = [], [], []
        if pairs:
            encoded = tokenizer([prompts[k] for k in pairs], truncation=True, max_length=max_seq_len)
            pair_labels = tokenizer([responses[k] for k in pairs], truncation=True, max_length=max_seq_len)["input_ids"]
            pair_inputs = encoded["input_ids"]
            if reconstruction_share > 0:
                for j, k in enumerate(pairs):
                    rng = random.Random(zlib.crc32(responses[k].encode("utf-8")) * 1_000_003 + seed)
                    if rng.random() < reconstruction_share:
                        pair_inputs[j] = mask_spans(pair_labels[j], tokenizer.mask_token_id, rng)
            paired = iter(zip(pair_inputs, pair_labels))
        for k, corrupt in enumerate(corrupt_rows):
            rows = corrupted(prompts[k] + "\n" + responses[k]) if corrupt else [next(paired)]
            for row_input, row_labels in rows:
                input_ids.append(row_input)
                attention_mask.append([1] * len(row_input))
                labels.append(row_labels)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    return tokenize


def cut_batches(order: list[int], lengths: list[tuple[int, int]], max_rows: int, max_tokens: int | None) -> list:
    """`order` cut into consecutive batches of at most `max_rows` rows and, with `max_tokens`, at most that many
    computed positions: rows × (longest prompt + longest response), what a padded batch costs."""
    batches, current, longest_prompt, longest_response = [], [], 0, 0
    for k in order:
        prompt = max(longest_prompt, lengths[k][0])
        response = max(longest_response, lengths[k][1])
        if current and (
            len(current) == max_rows or (max_tokens and (len(current) + 1) * (prompt + response) > max_tokens)
        ):
            batches.append(current)
            current, prompt, response = [], lengths[k][0], lengths[k][1]
        current.append(k)
        longest_prompt, longest_response = prompt, response
    return batches + [current] if current else batches


def shuffle_windows(seed: int, batch_rows: int | None = None, group: bool = False, max_tokens: int | None = None):
    """A batched map function (`with_indices=True`) that shuffles a stream window by window.

    - Plain: the tokenized rows of each window in a random order.
    - `group`: cut into batches of `batch_rows` rows of similar length (rows sorted by length, cut into batches,
      the batches shuffled). The Trainer's data loader takes consecutive rows, so its batches are these, and
      dynamic padding then pads little.
    - `max_tokens`: batches of at most `batch_rows` rows and `max_tokens` computed positions (see `cut_batches`),
      so they vary in rows; each is returned as one row of lists, for a data loader of batch size 1 and
      `PackedBatchCollator`.

    Why windows and not `IterableDataset.shuffle`: a shuffle buffer is not part of a stream's saved state
    (datasets#7444: it is refilled on resume), so a resumed run would train on other batches. A window's order
    depends only on its rows and its position in the stream, and `datasets` saves the position of the window's
    first row: a resumed run recomputes the window it stopped in and goes on with the same batches, at a cost that
    does not grow with the step. Length grouping is written here because `datasets` has none for streams."""

    def reorder(batch: dict, indices: list[int]) -> dict:
        rng = random.Random(seed * 1_000_003 + indices[0])
        lengths = [(len(i), len(label)) for i, label in zip(batch["input_ids"], batch["labels"])]
        order = list(range(len(indices)))
        if group:
            # Prompt length in steps of 16 tokens, then response length: both sides of a batch end up close
            # (sorting by the pair leaves responses of every length under one prompt length; by their sum, neither).
            order.sort(key=lambda k: (lengths[k][0] // 16, lengths[k][1], rng.random()))
        else:
            rng.shuffle(order)
        if not group and not max_tokens:
            return {key: [values[k] for k in order] for key, values in batch.items()}
        batches = cut_batches(order, lengths, batch_rows, max_tokens)
        if group:
            rng.shuffle(batches)
        if max_tokens:
            return {key: [[values[k] for k in b] for b in batches] for key, values in batch.items()}
        return {key: [values[k] for b in batches for k in b] for key, values in batch.items()}

    return reorder


class PackedBatchCollator:
    """Collates the rows of a data loader whose items are whole batches (`shuffle_windows` with a token budget):
    the batch's rows are unpacked and handed to the usual collator."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, items: list[dict]) -> dict:
        rows = [dict(zip(item, values)) for item in items for values in zip(*item.values())]
        return self.collator(rows)


def load_seq2seq_splits(data_args, tokenizer, max_seq_len: int, training_args):
    """(train, eval or None): tokenized prompt/response rows of the recipe's train_files and eval_files.

    A streamed training set is shuffled in windows of `buffer_size` rows (seeded by the recipe's seed); with
    `train_sampling_strategy: group_by_length`, each window is cut into batches of similar length, and with
    `max_tokens_per_batch` into batches under that budget (whole batches as items, see `shuffle_windows`)."""
    seed = training_args.seed
    train = load_seq2seq_dataset(
        data_args, data_args.train_paths, tokenizer, max_seq_len, seed=seed, reconstruction=True
    )
    if data_args.streaming:
        batch_rows = training_args.per_device_train_batch_size
        group = training_args.train_sampling_strategy == "group_by_length"
        max_tokens = data_args.max_tokens_per_batch
        if max_tokens and max_tokens < 2 * max_seq_len:
            raise ValueError(
                f"max_tokens_per_batch: {max_tokens} is less than one row can take (a prompt and a response of "
                f"max_seq_len {max_seq_len} tokens: {2 * max_seq_len})"
            )
        window = max(batch_rows, data_args.buffer_size // batch_rows * batch_rows)  # whole batches per window
        reorder = shuffle_windows(seed, batch_rows, group, max_tokens)
        train = train.map(reorder, batched=True, batch_size=window, with_indices=True)
    evaluation = None
    if data_args.eval_paths:
        evaluation = load_seq2seq_dataset(
            data_args, data_args.eval_paths, tokenizer, max_seq_len, seed=0, shuffle=False
        )
    return train, evaluation


def load_seq2seq_dataset(
    data_args, paths: list[Path], tokenizer, max_seq_len: int, seed: int, shuffle: bool = True, reconstruction=False
):
    """Tokenized prompt/response rows, ready for DataCollatorForSeq2Seq, in the recipe's `objective`; with
    `reconstruction`, the recipe's `reconstruction_share` of reconstruction rows (training sets only: evaluation
    stays on the task itself)."""
    columns = [data_args.prompt_column, data_args.response_column]
    table = load_table(
        paths,
        columns,
        streaming=data_args.streaming,
        shuffle_seed=seed if shuffle else None,
    )
    share = getattr(data_args, "reconstruction_share", 0.0) if reconstruction else 0.0
    if share and tokenizer.mask_token_id is None:
        raise ValueError("reconstruction_share: the tokenizer has no [MASK] token to hide spans with")
    objective = getattr(data_args, "objective", "text_to_text")
    span_share = {"text_to_text": 0.0, "span_corruption": 1.0}.get(
        objective, getattr(data_args, "span_corruption_share", 0.0)
    )
    shares = {}
    if span_share:
        shares = {"noise_density": data_args.noise_density, "mean_span": data_args.mean_span_length}
        check_sentinels(tokenizer, max_seq_len, **shares)
    tokenize = tokenize_pairs(
        tokenizer,
        max_seq_len,
        *columns,
        reconstruction_share=share,
        seed=seed,
        span_corruption_share=span_share,
        **shares,
    )
    return table.map(tokenize, batched=True, remove_columns=columns)


def check_sentinels(tokenizer, max_seq_len: int, noise_density: float, mean_span: float) -> None:
    """Span corruption needs a sentinel per span of the longest piece: say so before any training."""
    needed = span_corruption.expected_spans(max_seq_len, noise_density, mean_span)
    have = len(span_corruption.sentinel_ids(tokenizer))
    if have < needed:
        raise ValueError(
            f"objective: span corruption at max_seq_len {max_seq_len} needs {needed} sentinel tokens "
            f"(<extra_id_0> ..), the tokenizer ({tokenizer.name_or_path or 'given'}) has {have}: train the tokenizer "
            "with `sentinels: 100` (recipes/tokenizer.yaml does)"
        )
