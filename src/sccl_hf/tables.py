"""Reading prompt/response (and prompt/chosen/rejected) tables from parquet or JSON lines.

Rows whose fields are null, empty or not strings are skipped and counted per file; a missing column is an
error naming the file. Small data is read into memory; large data is streamed with `datasets`, one shard per
parquet row group (or JSON-lines file), so that under several processes accelerate hands each process its own
shards and no process reads another's rows.
"""

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import datasets
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """A data file is wrong; the message names the file (and the line, for JSON lines)."""


def check_columns(paths: list[Path], columns: list[str]) -> None:
    """Raise naming the first file that lacks one of `columns` (reads only parquet metadata / a first line)."""
    for path in paths:
        if path.suffix == ".parquet":
            names = set(pq.ParquetFile(path).schema_arrow.names)
        else:
            first = next(_iter_json_rows(path), None)
            if first is None:  # an empty JSON-lines file has no rows to read, and no columns to miss
                continue
            names = set(first)
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; it has {sorted(names)}")


def _iter_json_rows(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        if path.suffix == ".json" and f.read(1) == "[":  # a JSON array file
            f.seek(0)
            yield from json.load(f)
            return
        f.seek(0)
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}, line {number}: not valid JSON ({error.msg})") from error
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
            yield row


def _shards(paths: list[Path]) -> list[tuple[str, int]]:
    """(file, parquet row group) pairs; a JSON-lines file is one shard (row group -1)."""
    shards = []
    for path in paths:
        if path.suffix == ".parquet":
            shards += [(str(path), g) for g in range(pq.ParquetFile(path).num_row_groups)]
        else:
            shards.append((str(path), -1))
    return shards


def _iter_shard_rows(path: str, row_group: int, columns: list[str]) -> Iterator[dict]:
    if row_group >= 0:
        table = pq.ParquetFile(path).read_row_group(row_group, columns=list(columns))
        yield from table.to_pylist()
    else:
        yield from _iter_json_rows(Path(path))


def _valid(row: dict, columns: list[str]) -> bool:
    return all(isinstance(row.get(c), str) and row[c].strip() for c in columns)


def _generate_rows(shards: list[tuple[str, int]], columns: list[str]) -> Iterator[dict]:
    """Valid rows of the shards; invalid ones are skipped and counted, one warning per shard that had any."""
    for path, row_group in shards:
        skipped = 0
        for row in _iter_shard_rows(path, row_group, columns):
            if _valid(row, columns):
                yield {c: row[c] for c in columns}
            else:
                skipped += 1
        if skipped:
            where = f" (row group {row_group})" if row_group > 0 else ""
            logger.warning(
                "%s: skipped %d rows%s with a null, empty or non-string field in %s", path, skipped, where, columns
            )


def load_table(
    paths: list[Path],
    columns: list[str],
    streaming: bool = False,
    shuffle_seed: int | None = None,
    buffer_size: int = 10_000,
) -> datasets.Dataset | datasets.IterableDataset:
    """Rows of `columns` from `paths`, skipping invalid rows (counted and logged per file or row group).

    A stream is shuffled here (shard order and a buffer of `buffer_size` rows); an in-memory table is not,
    since the Trainer's sampler shuffles it every epoch."""
    check_columns(paths, columns)
    features = datasets.Features({c: datasets.Value("string") for c in columns})
    shards = _shards(paths)
    if streaming:
        table = datasets.IterableDataset.from_generator(
            _generate_rows, gen_kwargs={"shards": shards, "columns": tuple(columns)}, features=features
        )  # columns as a tuple: a list in gen_kwargs would count as a list of shards
        return table.shuffle(seed=shuffle_seed, buffer_size=buffer_size) if shuffle_seed is not None else table
    rows = list(_generate_rows(shards, columns))
    if not rows:
        raise DataError(f"no usable rows in {[str(p) for p in paths]} (every row had a null or empty field)")
    return datasets.Dataset.from_list(rows, features=features)


def tokenize_pairs(tokenizer, max_seq_len: int, prompt_column: str = "prompt", response_column: str = "response"):
    """A batched map function: prompt -> input_ids/attention_mask, response -> labels (both end in [EOS])."""

    def tokenize(batch: dict) -> dict:
        encoded = tokenizer(batch[prompt_column], truncation=True, max_length=max_seq_len)
        labels = tokenizer(batch[response_column], truncation=True, max_length=max_seq_len)["input_ids"]
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "labels": labels}

    return tokenize


def load_seq2seq_splits(data_args, tokenizer, max_seq_len: int, seed: int):
    """(train, eval or None): tokenized prompt/response rows of the recipe's train_files and eval_files."""
    train = load_seq2seq_dataset(data_args, data_args.train_paths, tokenizer, max_seq_len, seed=seed)
    evaluation = None
    if data_args.eval_paths:
        evaluation = load_seq2seq_dataset(
            data_args, data_args.eval_paths, tokenizer, max_seq_len, seed=0, shuffle=False
        )
    return train, evaluation


def load_seq2seq_dataset(data_args, paths: list[Path], tokenizer, max_seq_len: int, seed: int, shuffle: bool = True):
    """Tokenized prompt/response rows, ready for DataCollatorForSeq2Seq."""
    columns = [data_args.prompt_column, data_args.response_column]
    table = load_table(
        paths,
        columns,
        streaming=data_args.streaming,
        shuffle_seed=seed if shuffle else None,
        buffer_size=data_args.buffer_size,
    )
    tokenize = tokenize_pairs(tokenizer, max_seq_len, *columns)
    return table.map(tokenize, batched=True, remove_columns=columns)
