"""The `data` stage on datatrove: raw sources to clean, deduplicated, shuffled train/valid/test parquet.

Pipelines, each run by a datatrove executor (local processes, Slurm or Ray; a finished task is never redone, so an
interrupted run picks up where it stopped):

  1 clean        `tasks` tasks share the sources' files (JSON lines and parquet files by lines/rows, other
                 formats file by file); each cleans and filters its rows and hashes each row's normalised text
                 (datatrove ExactDedupSignature)
  2 exact/find   find rows whose hash was seen before (ExactFindDedups)
  3 exact/drop   drop them (ExactDedupFilter), then MinHash each row over character n-grams
  4 near/pairs   rows that share a MinHash band and agree on their whole signature (one task per band)
  5 near/groups  join the pairs into groups (MinhashDedupCluster)
  6 near/drop    keep one row per group (MinhashDedupFilter), scatter rows over `output_shards` random buckets
  7 split        shuffle each bucket (seeded) and cut train/valid/test by global position
  8 report       rows in and out per step and source, every drop by reason, lengths (JSON, markdown, PNG)

Everything between steps lives in `<output_dir>/.work` (removed after a finished run unless `keep_work`);
every dropped row, with its reason, file and line, is in `<output_dir>/dropped/`.

Hand-written here, and why (measurements in dev/LOG.md):
- MinHash stage 1: character n-grams (datatrove's shingles are words, and it does not split Chinese), hashed
  for a batch of rows at once in numpy (datatrove's per-row Python path costs ~150 us a row);
- MinHash stage 2: a numpy sort per band (datatrove merges files through a heap of Python objects), and each
  candidate pair checked on its whole signature (datatrove keeps every LSH candidate);
- the readers (`data_sources`: datatrove's have no encodings, JSON arrays or ShareGPT turns, and skip a
  malformed line without saying which);
- the seeded two-pass shuffle and the split (datatrove has neither).
Both MinHash steps keep datatrove's file formats, so its clustering and filtering steps and its executors run
as they are.
"""

import json
import math
import os
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import MinhashDedupSignature
from datatrove.utils.text import PUNCTUATION_TRANS
from datatrove.utils.word_tokenizers import WordTokenizer

from sccl_hf.cleaning import CleaningArguments, drop_reason, rewrites, tidy
from sccl_hf.data_sources import BadRecord, SourceSpec, read_source

WORK = ".work"
FORMAT_REWRITES = ("strip_html", "strip_urls", "chinese_punctuation", "collapse_punctuation")
SPLITS = ("train", "valid", "test")


# -- rows as datatrove Documents --------------------------------------------------------------------------------


def answers_of(row: dict) -> list[str]:
    return [row["chosen"], row["rejected"]] if row.get("chosen") is not None else [row["response"]]


def dedup_text(row: dict) -> str:
    """The text duplicates are judged on: the prompt and its answer(s)."""
    return row["prompt"] + "\n" + "\n".join(answers_of(row))


def row_columns(preference: bool) -> list[str]:
    answers = ["chosen", "rejected"] if preference else ["response"]
    return ["history", "prompt", *answers, "source", "file", "line"]


def to_document(row: dict) -> Document:
    return Document(text=dedup_text(row), id=f"{row['source']}:{row['line']}", metadata=row)


def exact_key(document: Document) -> bytes:
    """The normalised pair that exact deduplication hashes (whitespace does not make a row new)."""
    return "".join(document.text.split()).encode("utf-8")


# -- character n-gram MinHash (datatrove extension points) ------------------------------------------------------


class CharacterTokenizer(WordTokenizer):
    """Characters as datatrove's 'words', so its n-grams are character n-grams. Chinese has no spaces, and
    datatrove's tokenizers for it need spaCy and jieba; characters need nothing."""

    def __init__(self):
        super().__init__("zh")

    def word_tokenize(self, text: str) -> list[str]:
        return [c for c in text if not c.isspace()]

    def sent_tokenize(self, text: str) -> list[str]:
        return [text]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(i, i + 1) for i, c in enumerate(text) if not c.isspace()]


_PRIME = np.uint64(1_000_003)
# datatrove's simplify_text, in one str.translate: lower case, punctuation out, every digit 0 (its regexes took a
# third of the signature step's time)
_NORMALISE = {**PUNCTUATION_TRANS, **{ord(d): "0" for d in "0123456789"}}


def normalise(text: str) -> str:
    return text.lower().translate(_NORMALISE)


def character_shingles(text: str, n: int) -> np.ndarray:
    """Hashes (uint64, shape (k, 1)) of the character n-grams of `text`, whitespace removed; a text shorter than n
    is one shingle. Vectorised (a rolling hash over the code points) instead of one Python hash call per n-gram:
    the same n-grams as CharacterTokenizer + datatrove's `ngrams`, about 20x faster."""
    codes = np.frombuffer("".join(text.split()).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if codes.size == 0:
        return np.zeros((0, 1), dtype=np.uint64)
    return _rolling_hashes(codes, min(n, codes.size)).reshape((-1, 1))


def _rolling_hashes(codes: np.ndarray, n: int) -> np.ndarray:
    """Hashes of every n-character window of `codes` (uint64 code points): a polynomial rolling hash, then a
    splitmix64 finaliser so that the bits are mixed."""
    width = codes.size - n + 1
    hashes = np.zeros(width, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            hashes = hashes * _PRIME + codes[k : k + width]
        hashes ^= hashes >> np.uint64(30)
        hashes *= np.uint64(0xBF58476D1CE4E5B9)
        hashes ^= hashes >> np.uint64(27)
        hashes *= np.uint64(0x94D049BB133111EB)
        hashes ^= hashes >> np.uint64(31)
    return hashes


class CharacterMinhashSignature(MinhashDedupSignature):
    """MinHash stage 1 of 4 over character n-grams: datatrove's step with its file format and parameters, two
    methods replaced. `get_shingles`/`get_signature` (one row, as datatrove calls them) hash character n-grams
    and use multiply-shift hashing (the top 32 bits of a*x+b mod 2^64, a odd: a universal family like
    datatrove's a*x+b mod 2^61-1, without the 64-bit modulo). `run` does the same for a batch of rows at once and
    writes each band's file in one go, unsorted (SortedMinhashBuckets sorts): datatrove's run costs ~150 us a
    row in Python (a numpy call per row, 20 struct.pack and file writes per row, then a read-sort-write pass)."""

    name = "🎯 MinHash stage 1 (character n-grams, batched)"
    batch_rows = 512

    def __init__(self, output_folder, config):
        super().__init__(output_folder, config=config, language=CharacterTokenizer())
        assert self.config.hash_config.precision == 32, "character MinHash writes 32-bit signatures"

    def get_shingles(self, text: str) -> np.ndarray:
        return character_shingles(normalise(text), self.config.n_grams)

    def get_signature(self, shingles: np.ndarray) -> list[list[int]]:
        a, b = self.parameters
        with np.errstate(over="ignore"):
            hashes = (shingles * (a | np.uint64(1)) + b) >> np.uint64(32)
        minima = hashes.min(axis=0).astype(np.uint32)
        return minima.reshape(self.config.num_buckets, self.config.hashes_per_bucket).tolist()

    def batch_signatures(self, texts: list[str]) -> np.ndarray:
        """(rows, hashes) uint32 signatures of `texts`, equal to get_signature(get_shingles(t)) row by row; a
        row with no character at all gets the maximum everywhere (it matches nothing)."""
        n = self.config.n_grams
        a, b = self.parameters
        a = a | np.uint64(1)
        arrays = [np.frombuffer("".join(normalise(t).split()).encode("utf-32-le"), dtype=np.uint32) for t in texts]
        lengths = np.array([x.size for x in arrays], dtype=np.int64)
        signatures = np.full((len(texts), self.num_hashes), np.iinfo(np.uint32).max, dtype=np.uint32)
        short = np.nonzero((lengths > 0) & (lengths < n))[0]
        for row in short:  # shorter than n: the whole text is the one shingle
            signatures[row] = np.array(self.get_signature(self.get_shingles(texts[row]))).reshape(-1)
        long = np.nonzero(lengths >= n)[0]
        if long.size:
            codes = np.concatenate([arrays[i] for i in long]).astype(np.uint64)
            starts = np.concatenate([[0], np.cumsum(lengths[long])[:-1]])
            windows = lengths[long] - n + 1
            # the windows that lie inside one row: row i owns starts[i] .. starts[i] + windows[i] - 1
            offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(windows)[:-1]]), windows)
            inside = offsets + np.arange(windows.sum())
            shingles = _rolling_hashes(codes, n)[inside]
            with np.errstate(over="ignore"):
                hashes = (shingles[:, None] * a + b) >> np.uint64(32)
            segment_starts = np.concatenate([[0], np.cumsum(windows)[:-1]])
            signatures[long] = np.minimum.reduceat(hashes, segment_starts, axis=0).astype(np.uint32)
        return signatures

    def run(self, data, rank: int = 0, world_size: int = 1):
        rows, bands = self.config.hashes_per_bucket, self.config.num_buckets
        chunks, batch, index = [], [], 0
        with self.track_time():
            for document in data:
                self.stat_update("total")
                batch.append(document.text)
                if len(batch) == self.batch_rows:
                    chunks.append(self._signed(batch, index))
                    index += len(batch)
                    batch = []
            if batch:
                chunks.append(self._signed(batch, index))
            # every row is written, so that a row's position in each band file is its index (SortedMinhashBuckets
            # reads whole signatures back by index); rows without characters are all-max and are skipped there
            records = np.concatenate(chunks) if chunks else np.zeros((0, rows * bands + 1), dtype=np.uint32)
            for band in range(bands):
                band_records = np.concatenate(
                    [records[:, band * rows : (band + 1) * rows], records[:, -1:]], axis=1
                ).astype("<u4")
                path = Path(self.output_folder.path) / f"bucket_{band:03d}" / f"{rank:05d}.minhash.sig"
                path.parent.mkdir(parents=True, exist_ok=True)
                band_records.tofile(path)

    def _signed(self, texts: list[str], first_index: int) -> np.ndarray:
        signatures = self.batch_signatures(texts)
        doc_index = np.arange(first_index, first_index + len(texts), dtype=np.uint32)[:, None]
        return np.concatenate([signatures, doc_index], axis=1)


class SortedMinhashBuckets(PipelineStep):
    """MinHash stage 2, one task per band: rows whose signatures agree on the whole band are candidate pairs;
    a candidate is kept when the two whole signatures agree on at least `min_similarity` of their hashes (an
    estimate of the pair's Jaccard similarity), which removes most of LSH's false candidates (datatrove keeps
    every candidate). Pairs are written as datatrove's MinhashDedupBuckets writes them (`<band>_00.dups`: file,
    doc, file, doc), for its MinhashDedupCluster. The band's signatures (rows x hashes_per_band x 4 bytes) are
    sorted with numpy, where datatrove merges the sorted files through a heap of Python objects (~2.5 us per row
    and band)."""

    type = "🫂 - DEDUP"
    name = "🎯 MinHash stage 2 (sorted in numpy, candidates verified)"

    def __init__(self, input_folder: str, output_folder: str, config, min_similarity: float = 0.0):
        super().__init__()
        self.input_folder, self.output_folder, self.config = Path(input_folder), Path(output_folder), config
        self.min_similarity = min_similarity
        rows = config.hashes_per_bucket
        self.record = np.dtype([(f"h{i}", "<u4") for i in range(rows)] + [("doc", "<u4")])

    def _band(self, path: Path) -> np.ndarray:
        records = np.memmap(path, dtype=self.record, mode="r") if path.stat().st_size else np.zeros(0, self.record)
        return records

    def _hashes(self, records) -> np.ndarray:
        return np.stack([records[f"h{i}"] for i in range(self.config.hashes_per_bucket)], axis=1)

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        assert world_size == self.config.num_buckets, "one task per band"
        assert self.config.hash_config.precision == 32
        hashes, docs, files = [], [], []
        for path in sorted((self.input_folder / f"bucket_{rank:03d}").glob("*.minhash.sig")):
            records = self._band(path)
            band = self._hashes(records)
            keep = ~np.all(band == np.iinfo(np.uint32).max, axis=1)  # rows without characters
            hashes.append(band[keep])
            docs.append(np.asarray(records["doc"])[keep])
            files.append(np.full(int(keep.sum()), int(path.name.removesuffix(".minhash.sig")), dtype=np.uint32))
        self.output_folder.mkdir(parents=True, exist_ok=True)
        out = self.output_folder / f"{rank:05d}_00.dups"
        pairs = np.zeros((0, 4), dtype="<u4")
        if hashes:
            hashes, docs, files = np.concatenate(hashes), np.concatenate(docs), np.concatenate(files)
            order = np.lexsort(hashes.T[::-1])
            ordered = hashes[order]
            same = np.nonzero(np.all(ordered[1:] == ordered[:-1], axis=1))[0]
            first, second = order[same], order[same + 1]
            pairs = np.stack([files[first], docs[first], files[second], docs[second]], axis=1).astype("<u4")
            self.stat_update("candidates", value=int(len(pairs)))
            if self.min_similarity > 0 and len(pairs):
                similarity = (
                    self.signatures(pairs[:, 0], pairs[:, 1]) == self.signatures(pairs[:, 2], pairs[:, 3])
                ).mean(axis=1)
                pairs = pairs[similarity >= self.min_similarity]
        tmp = out.with_suffix(".tmp")
        pairs.tofile(tmp)
        os.replace(tmp, out)
        self.stat_update("total_matches", value=int(len(pairs)))

    def signatures(self, file_ids: np.ndarray, doc_ids: np.ndarray) -> np.ndarray:
        """Whole signatures (rows, hashes) of the given rows, read from every band's file by row index."""
        rows = self.config.hashes_per_bucket
        whole = np.empty((len(doc_ids), rows * self.config.num_buckets), dtype=np.uint32)
        for band in range(self.config.num_buckets):
            for file_id in np.unique(file_ids):
                chosen = file_ids == file_id
                records = self._band(self.input_folder / f"bucket_{band:03d}" / f"{file_id:05d}.minhash.sig")
                whole[chosen, band * rows : (band + 1) * rows] = self._hashes(records[doc_ids[chosen]])
        return whole


def lsh_threshold(bands: int, rows: int) -> float:
    """The similarity at which a pair becomes a candidate with probability about 1/2: (1/bands)^(1/rows)."""
    return (1 / bands) ** (1 / rows)


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    return 1 - (1 - similarity**rows) ** bands


# -- steps ------------------------------------------------------------------------------------------------------


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


class DroppedRows:
    """Rows a step drops, with the reason, source, file and line: `<output_dir>/dropped/<step>/<rank>.parquet`.
    Also datatrove's `exclusion_writer` (a context manager with `write(document, rank)`)."""

    def __init__(self, folder: str, step: str, reason: str | None = None):
        self.folder, self.step, self.reason = folder, step, reason
        self.rows, self.rank = [], 0

    def __enter__(self):
        self.rows = []
        return self

    def add(self, reason, source, file, line, prompt="", response="", detail=""):
        self.rows.append(
            {
                "step": self.step,
                "reason": reason,
                "source": source,
                "file": file,
                "line": int(line),
                "prompt": prompt,
                "response": response,
                "detail": detail,
            }
        )

    def write(self, document: Document, rank: int = 0, **_):
        row = document.metadata
        self.rank = rank
        prompt = row["history"] + row["prompt"]
        self.add(self.reason, row["source"], row["file"], row["line"], prompt, "\n".join(answers_of(row)))

    def save(self, rank: int):
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(self.folder) / self.step / f"{rank:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        schema = pa.schema([(k, pa.int64() if k == "line" else pa.string()) for k in DROPPED_COLUMNS])
        pq.write_table(pa.Table.from_pylist(self.rows, schema=schema), path)
        self.rows = []

    def __exit__(self, *_):
        if self.rows:  # as an exclusion_writer it learns its task's rank only from a write
            self.save(self.rank)


DROPPED_COLUMNS = ("step", "reason", "source", "file", "line", "prompt", "response", "detail")


class ReadAndClean(PipelineStep):
    """Pipeline 1: read this task's share of the sources, rewrite and filter each row, and yield it. Counts per
    source go to `<work>/ledger/clean/<rank>.json`; dropped rows to `dropped/clean/<rank>.parquet`."""

    type = "📖 - READER"
    name = "sources -> clean rows"

    def __init__(self, sources: list[SourceSpec], shards: list[list], cleaning: CleaningArguments, work, out):
        super().__init__()
        self.sources, self.shards, self.cleaning = sources, shards, cleaning
        self.work, self.out = work, out

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from tqdm import tqdm

        steps = rewrites(self.cleaning)
        dropped = DroppedRows(str(Path(self.out) / "dropped"), "clean")
        ledger = defaultdict(lambda: {"records": 0, "bad": Counter(), "changed": Counter(), "dropped": Counter()})
        for source_index, files, part in self.shards[rank] if rank < len(self.shards) else []:
            spec = self.sources[source_index]
            counts = ledger[spec.name]
            records = read_source(spec, [Path(f) for f in files], part=tuple(part))
            for record in tqdm(records, desc=f"task {rank}: {spec.name}", mininterval=5, disable=None, leave=False):
                if isinstance(record, BadRecord):
                    counts["bad"][record.reason] += 1
                    dropped.add(record.reason, record.source, record.file, record.line, detail=record.raw)
                    continue
                counts["records"] += 1
                row = {"history": record.history, "prompt": record.prompt, "source": spec.name}
                row |= {"file": record.file, "line": record.line}
                if record.chosen is not None:
                    row["chosen"], row["rejected"] = record.chosen, record.rejected
                else:
                    row["response"] = record.response
                texts = [k for k in ("history", "prompt", "response", "chosen", "rejected") if k in row]
                for name, rewrite in steps:
                    changed = False
                    for key in texts:
                        if key == "response" and spec.structured_response and name in FORMAT_REWRITES:
                            continue
                        new = rewrite(row[key])
                        changed |= new != row[key]
                        row[key] = new
                    counts["changed"][name] += changed
                for key in texts:
                    text = tidy(row[key])
                    row[key] = text + "\n" if key == "history" and text else text
                reason = drop_reason(row["history"] + row["prompt"], answers_of(row), self.cleaning)
                if reason:
                    counts["dropped"][reason] += 1
                    prompt = row["history"] + row["prompt"]
                    dropped.add(reason, spec.name, record.file, record.line, prompt, "\n".join(answers_of(row)))
                    continue
                self.stat_update("rows")
                yield to_document(row)
        dropped.save(rank)
        _write_json(Path(self.work) / "ledger" / "clean" / f"{rank:05d}.json", ledger)


class ReadRows(PipelineStep):
    """The rows an earlier pipeline's task of the same rank wrote (`<folder>/<rank>.parquet`), as Documents, in
    order. Signature and filter steps count rows by position, so both must read exactly these rows in this order."""

    type = "📖 - READER"
    name = "rows of this task"

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        import pyarrow.parquet as pq

        path = Path(self.folder) / f"{rank:05d}.parquet"
        if not path.is_file():  # a task that kept no rows wrote no file
            return
        for batch in pq.ParquetFile(path).iter_batches(batch_size=2048):
            for row in batch.to_pylist():
                self.stat_update("rows")
                yield to_document(row)


class AssignBucket(PipelineStep):
    """Send each row to one of `buckets` shuffle buckets, at random (seeded by the run's seed and the task)."""

    name = "rows -> random buckets"

    def __init__(self, buckets: int, seed: int):
        super().__init__()
        self.buckets, self.seed = buckets, seed

    def run(self, data, rank: int = 0, world_size: int = 1):
        rng = np.random.default_rng([self.seed, rank])
        for document in data:
            document.metadata["bucket"] = f"{int(rng.integers(self.buckets)):05d}"
            yield document


def row_writer(folder: str, filename: str, preference: bool):
    """datatrove's ParquetWriter for rows (one file per template, no size splitting, a fixed schema)."""
    import pyarrow as pa
    from datatrove.pipeline.writers import ParquetWriter

    columns = row_columns(preference)
    schema = pa.schema([(c, pa.int64() if c == "line" else pa.string()) for c in columns])

    def adapter(self, document):
        return {c: document.metadata[c] for c in columns}

    # intermediate files, read once by the next pipeline: no content-defined chunking or page index (Hub niceties)
    return ParquetWriter(
        folder,
        output_filename=filename,
        adapter=adapter,
        schema=schema,
        max_file_size=-1,
        use_content_defined_chunking=False,
        write_page_index=False,
    )


class ShuffleSplit(PipelineStep):
    """Pipeline 8, one task per bucket: shuffle the bucket's rows (seeded), give each row its global position
    (buckets in order), and write it to test, valid or train by position: the first `test` positions are the
    test split, the next `valid` positions the valid split. A bucket's rows are all that is held in memory."""

    type = "💽 - WRITER"
    name = "shuffle and split"

    def __init__(self, work: str, out: str, sizes: tuple, seed: int, row_group_rows: int, preference: bool):
        super().__init__()
        self.work, self.out, self.sizes, self.seed = work, out, sizes, seed
        self.row_group_rows, self.preference = row_group_rows, preference

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        import pyarrow as pa
        import pyarrow.compute  # noqa: F401  (pa.compute)
        import pyarrow.parquet as pq

        scatter = Path(self.work) / "scatter"
        counts = [
            sum(pq.ParquetFile(f).metadata.num_rows for f in (scatter / f"{b:05d}").glob("*.parquet"))
            for b in range(world_size)
        ]
        total = sum(counts)
        n_test, n_valid = split_counts(total, *self.sizes)
        files = sorted((scatter / f"{rank:05d}").glob("*.parquet"))
        columns = [c for c in row_columns(self.preference) if c not in ("file", "line")]
        if not files:
            return
        table = pa.concat_tables(pq.read_table(f, columns=columns) for f in files)
        prompt = pa.compute.binary_join_element_wise(table.column("history"), table.column("prompt"), "")
        table = table.drop_columns(["history", "prompt"]).add_column(0, "prompt", prompt)
        table = table.take(np.random.default_rng([self.seed, rank]).permutation(table.num_rows))
        position = sum(counts[:rank]) + np.arange(table.num_rows)
        ranges = {"test": (0, n_test), "valid": (n_test, n_test + n_valid), "train": (n_test + n_valid, total)}
        answer = "chosen" if self.preference else "response"
        stats = {}
        for split, (low, high) in ranges.items():
            index = np.nonzero((position >= low) & (position < high))[0]
            if index.size:
                path = Path(self.out) / split / f"part-{rank:05d}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                part = table.take(index)
                pq.write_table(part, path, row_group_size=self.row_group_rows)
                self.stat_update(split, value=int(index.size))
                stats[split] = {
                    "sources": Counter(part.column("source").to_pylist()),
                    **{
                        column: np.bincount(pa.compute.utf8_length(part.column(column)).to_numpy()).tolist()
                        for column in ("prompt", answer)
                    },
                }
        # counts and length histograms for the report, so that it need not read the output again
        _write_json(Path(self.work) / "ledger" / "split" / f"{rank:05d}.json", stats)


def split_counts(total: int, test_size: float, valid_size: float) -> tuple[int, int]:
    """Rows for test and valid: a share of `total` when the size is below 1, else a count (at most what there is)."""

    def rows(size):
        return int(round(total * size)) if size < 1 else int(size)

    n_test = min(rows(test_size), total)
    return n_test, min(rows(valid_size), total - n_test)


# -- planning the shards of pipeline 1 --------------------------------------------------------------------------


def plan_shards(sources: list[SourceSpec], tasks: int) -> list[list]:
    """[(source index, files, (part, parts))] for each of `tasks` tasks of pipeline 1, balanced by bytes. A JSON
    lines or parquet file is shared by several tasks (each reads every parts-th line or row) when it is big
    against the whole; other files are read whole; a source with `max_rows` is read by one task, in file order."""
    from sccl_hf.data_sources import SPLITTABLE_FORMATS

    total = sum(p.stat().st_size for spec in sources for p in spec.paths) or 1
    units = []
    for index, spec in enumerate(sources):
        sizes = [p.stat().st_size for p in spec.paths]
        if spec.max_rows is not None:
            units.append((sum(sizes), (index, [str(p) for p in spec.paths], (0, 1))))
            continue
        for path, size in zip(spec.paths, sizes):
            parts = max(1, round(tasks * size / total)) if spec.format in SPLITTABLE_FORMATS else 1
            units += [(size / parts, (index, [str(path)], (part, parts))) for part in range(parts)]
    shards = [[] for _ in range(tasks)]
    loads = [0.0] * tasks
    for size, unit in sorted(units, key=lambda u: -u[0]):
        target = loads.index(min(loads))
        shards[target].append(unit)
        loads[target] += size
    return shards


def fingerprint(value) -> str:
    return f"{zlib.crc32(json.dumps(value, sort_keys=True, default=str).encode()):08x}"


# -- report -----------------------------------------------------------------------------------------------------


def _percentiles(histogram: np.ndarray, points=(5, 25, 50, 75, 95, 99, 100)) -> dict:
    total = histogram.sum()
    if not total:
        return {}
    cumulative = np.cumsum(histogram)
    return {f"p{p}": int(np.searchsorted(cumulative, math.ceil(total * p / 100))) for p in points}


class WriteReport(PipelineStep):
    """Pipeline 9 (one task): report.json, report.md and lengths.png in the output folder."""

    name = "report"

    def __init__(self, work: str, out: str, settings: dict, source_names: list[str], answer_column: str):
        super().__init__()
        self.work, self.out, self.settings = work, out, settings
        self.source_names, self.answer_column = source_names, answer_column

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        write_report(self.work, self.out, self.settings, self.source_names, self.answer_column)


def write_report(work: str, out: str, settings: dict, source_names: list[str], answer_column: str) -> dict:
    import pyarrow.parquet as pq

    work, out = Path(work), Path(out)
    records, bad, changed, cleaned = Counter(), defaultdict(Counter), Counter(), defaultdict(Counter)
    for path in sorted((work / "ledger" / "clean").glob("*.json")):
        for source, counts in json.loads(path.read_text(encoding="utf-8")).items():
            records[source] += counts["records"]
            bad[source].update(counts["bad"])
            changed.update(counts["changed"])
            cleaned[source].update(counts["dropped"])
    dropped = defaultdict(Counter)  # (step, source) -> reason
    for path in sorted((out / "dropped").glob("*/*.parquet")):
        table = pq.read_table(path, columns=["step", "source", "reason"])
        for step, source, reason in zip(*(table.column(c).to_pylist() for c in ("step", "source", "reason"))):
            dropped[(step, source)][reason] += 1
    outputs = {split: sorted((out / split).glob("*.parquet")) for split in SPLITS}
    out_counts = {split: Counter() for split in SPLITS}
    histograms = {"prompt": np.zeros(1, dtype=np.int64), answer_column: np.zeros(1, dtype=np.int64)}
    for path in sorted((work / "ledger" / "split").glob("*.json")):
        for split, stats in json.loads(path.read_text(encoding="utf-8")).items():
            out_counts[split].update(stats["sources"])
            for column in histograms:
                counts = np.asarray(stats[column], dtype=np.int64)
                size = max(histograms[column].size, counts.size)
                histograms[column] = np.pad(histograms[column], (0, size - histograms[column].size))
                histograms[column][: counts.size] += counts
    per_source = {}
    for name in source_names:
        after_clean = records[name] - sum(cleaned[name].values())
        exact = dropped[("exact_dedup", name)].total()
        near = dropped[("near_dedup", name)].total()
        per_source[name] = {
            "records_read": records[name] + sum(bad[name].values()),
            "unreadable_or_filtered_at_read": dict(bad[name]),
            "rows": records[name],
            "dropped_by_cleaning": dict(cleaned[name]),
            "after_cleaning": after_clean,
            "exact_duplicates": exact,
            "near_duplicates": near,
            "kept": {split: out_counts[split][name] for split in SPLITS},
        }
    lengths = {column: _percentiles(histogram) for column, histogram in histograms.items()}
    total = {key: sum(s[key] for s in per_source.values()) for key in ("records_read", "rows", "after_cleaning")}
    steps = [
        {"step": "read", "rows_in": total["records_read"], "rows_out": total["rows"]},
        {"step": "clean", "rows_in": total["rows"], "rows_out": total["after_cleaning"]},
    ]
    exact_total = sum(s["exact_duplicates"] for s in per_source.values())
    near_total = sum(s["near_duplicates"] for s in per_source.values())
    steps.append(
        {"step": "exact_dedup", "rows_in": total["after_cleaning"], "rows_out": total["after_cleaning"] - exact_total}
    )
    steps.append(
        {"step": "near_dedup", "rows_in": steps[-1]["rows_out"], "rows_out": steps[-1]["rows_out"] - near_total}
    )
    report = {
        "settings": settings,
        "splits": {split: sum(out_counts[split].values()) for split in SPLITS},
        "files": {split: len(files) for split, files in outputs.items()},
        "steps": steps,
        "rewrites_changed_rows": dict(changed),
        "sources": per_source,
        "lengths_chars": lengths,
    }
    _write_json(out / "report.json", report)
    (out / "report.md").write_text(report_markdown(report), encoding="utf-8")
    _plot_lengths(histograms, out / "lengths.png")
    return report


def report_markdown(report: dict) -> str:
    lines = ["# Data report", "", "| split | rows | files |", "|---|---:|---:|"]
    lines += [f"| {s} | {report['splits'][s]:,} | {report['files'][s]} |" for s in SPLITS]
    lines += ["", "| step | rows in | rows out |", "|---|---:|---:|"]
    lines += [f"| {s['step']} | {s['rows_in']:,} | {s['rows_out']:,} |" for s in report["steps"]]
    lines += ["", "| source | read | dropped at read | dropped by cleaning | exact dup | near dup | kept |"]
    lines += ["|---|---:|---|---|---:|---:|---:|"]
    for name, s in report["sources"].items():

        def reasons(counts):
            return ", ".join(f"{reason}: {n:,}" for reason, n in sorted(counts.items(), key=lambda x: -x[1])) or "-"

        kept = sum(s["kept"].values())
        lines.append(
            f"| {name} | {s['records_read']:,} | {reasons(s['unreadable_or_filtered_at_read'])} "
            f"| {reasons(s['dropped_by_cleaning'])} | {s['exact_duplicates']:,} | {s['near_duplicates']:,} | {kept:,} |"
        )
    lines += [
        "",
        "Rows changed by each rewrite: "
        + (", ".join(f"{k} {v:,}" for k, v in report["rewrites_changed_rows"].items()) or "none"),
    ]
    lines += ["", "| column | " + " | ".join(next(iter(report["lengths_chars"].values()), {}).keys()) + " |"]
    lines += ["|---|" + "---:|" * len(next(iter(report["lengths_chars"].values()), {}))]
    lines += [
        f"| {c} (chars) | " + " | ".join(str(v) for v in p.values()) + " |" for c, p in report["lengths_chars"].items()
    ]
    settings = report["settings"]
    if settings.get("near_dedup"):
        lines += [
            "",
            f"Near duplicates: MinHash over character {settings['shingle_chars']}-grams, {settings['minhash_bands']} bands "
            f"x {settings['minhash_rows_per_band']} rows: pairs above about {settings['lsh_threshold']:.2f} similarity are caught, "
            f"and kept as duplicates when their whole signatures agree on {settings['minhash_min_similarity']:.0%} or more.",
        ]
    return "\n".join(lines) + "\n"


def _plot_lengths(histograms: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(histograms), figsize=(5 * len(histograms), 3.2))
    for axis, (column, histogram) in zip(np.atleast_1d(axes), histograms.items()):
        top = max(10, _percentiles(histogram, (99,)).get("p99", 10))
        axis.bar(np.arange(min(histogram.size, top + 1)), histogram[: top + 1], width=1.0)
        axis.set_xlim(0, top)
        axis.set_title(f"{column} length (characters, to the 99th percentile)")
        axis.set_ylabel("rows")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# -- running the pipelines --------------------------------------------------------------------------------------


def make_executor(options: dict, pipeline: list, tasks: int, logging_dir: Path, depends=None):
    """A datatrove executor of the recipe's kind: local processes, Ray (an existing cluster, or one started on
    this machine) or Slurm (jobs chained by `depends`)."""
    kind = options["executor"]
    if kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        class QuietLocalExecutor(LocalPipelineExecutor):
            """datatrove prints every task's pipeline and stats on the console (the first worker's, at INFO);
            here the console shows a task's errors and the count of finished tasks, and each task's whole log
            stays in `<logging_dir>/logs/`. (local_rank is used for nothing but that choice.)"""

            def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
                return super()._run_for_rank(rank, local_rank + 1, node_rank)

        workers = min(options["workers"], tasks)
        return QuietLocalExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=str(logging_dir))
    if kind == "ray":
        from datatrove.executor import RayPipelineExecutor

        return RayPipelineExecutor(
            pipeline,
            tasks=tasks,
            workers=options["workers"] if options["workers_given"] else -1,
            logging_dir=str(logging_dir),
            **options["executor_options"],
        )
    from datatrove.executor import SlurmPipelineExecutor

    return SlurmPipelineExecutor(
        pipeline, tasks=tasks, logging_dir=str(logging_dir), depends=depends, **options["executor_options"]
    )


def build_pipelines(args, cleaning: CleaningArguments, sources: list[SourceSpec]) -> list[tuple[str, list, int]]:
    """(name, datatrove pipeline, tasks) for each pipeline of the run, in order (see the module docstring)."""
    from datatrove.pipeline.dedup import (
        ExactDedupConfig,
        ExactDedupFilter,
        ExactDedupSignature,
        ExactFindDedups,
        MinhashConfig,
        MinhashDedupCluster,
        MinhashDedupFilter,
    )
    from datatrove.utils.hashing import HashConfig

    out = Path(args.output_dir)
    work = out / WORK
    dropped = str(out / "dropped")
    preference = sources[0].preference
    tasks = args.tasks
    exact = ExactDedupConfig(content_getter=exact_key, hash_config=HashConfig(precision=64))
    minhash = MinhashConfig(
        n_grams=args.shingle_chars,
        num_buckets=args.minhash_bands,
        hashes_per_bucket=args.minhash_rows_per_band,
        seed=args.seed,
        hash_config=HashConfig(precision=32),
    )
    clean = [
        ReadAndClean(sources, plan_shards(sources, tasks), cleaning, str(work), str(out)),
        row_writer(str(work / "cleaned"), "${rank}.parquet", preference),
    ]
    if args.exact_dedup:
        clean.append(ExactDedupSignature(str(work / "exact_sigs"), exact))
    pipelines = [("clean", clean, tasks)]
    unique = [ReadRows(str(work / "cleaned"))]
    if args.exact_dedup:
        find = ExactFindDedups(str(work / "exact_sigs"), str(work / "exact_dups"), exact)
        pipelines.append(("exact_dedup/find", [find], 1))
        exclusion = DroppedRows(dropped, "exact_dedup", "exact duplicate")
        unique.append(ExactDedupFilter(str(work / "exact_dups"), exact, exclusion_writer=exclusion))
    unique.append(row_writer(str(work / "unique"), "${rank}.parquet", preference))
    if args.near_dedup:
        unique.append(CharacterMinhashSignature(str(work / "minhash_sigs"), minhash))
    pipelines.append(("exact_dedup/drop" if args.exact_dedup else "unique rows", unique, tasks))
    final = [ReadRows(str(work / "unique"))]
    if args.near_dedup:
        pairs = SortedMinhashBuckets(
            str(work / "minhash_sigs"), str(work / "minhash_pairs"), minhash, args.minhash_min_similarity
        )
        pipelines.append(("near_dedup/pairs", [pairs], args.minhash_bands))
        groups = MinhashDedupCluster(str(work / "minhash_pairs"), str(work / "minhash_remove"), config=minhash)
        pipelines.append(("near_dedup/groups", [groups], 1))
        exclusion = DroppedRows(dropped, "near_dedup", "near duplicate")
        final.append(MinhashDedupFilter(str(work / "minhash_remove"), exclusion_writer=exclusion))
    final += [
        AssignBucket(args.output_shards, args.seed),
        row_writer(str(work / "scatter"), "${bucket}/${rank}.parquet", preference),
    ]
    pipelines.append(("near_dedup/drop" if args.near_dedup else "scatter", final, tasks))
    sizes = (args.test_size, args.valid_size)
    split = ShuffleSplit(str(work), str(out), sizes, args.seed, args.row_group_rows, preference)
    pipelines.append(("split", [split], args.output_shards))
    settings = {
        "exact_dedup": args.exact_dedup,
        "near_dedup": args.near_dedup,
        "shingle_chars": args.shingle_chars,
        "minhash_bands": args.minhash_bands,
        "minhash_rows_per_band": args.minhash_rows_per_band,
        "lsh_threshold": round(lsh_threshold(args.minhash_bands, args.minhash_rows_per_band), 4),
        "minhash_min_similarity": args.minhash_min_similarity,
        "seed": args.seed,
        "test_size": args.test_size,
        "valid_size": args.valid_size,
        "tasks": tasks,
        "output_shards": args.output_shards,
    }
    answer = "chosen" if preference else "response"
    report = WriteReport(str(work), str(out), settings, [s.name for s in sources], answer)
    pipelines.append(("report", [report], 1))
    return pipelines
