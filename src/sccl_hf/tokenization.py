"""Tokenizers of three kinds (the machinery of `stage: tokenizer`).

- `char_bpe`: BPE over characters (NFKC, punctuation and digits split, Metaspace), plus byte fallback.
- `byte_bpe`: byte-level BPE (GPT-2 style); every text is bytes already, so it never needs a fallback.
- `word_frequency`: SCCLM's way. Count jieba words and characters over the corpus, keep those seen at least
  `min_count` times (most frequent first, up to `vocab_size`), and write them as a BPE vocabulary whose merges
  split each kept word into two kept parts (`abcde`: a|bcde, ab|cde, abc|de, abcd|e where both parts are kept),
  ordered by the word's frequency. The model matches whole vocabulary words before merging (`ignore_merges`),
  so a kept word on its own is always one token. Byte fallback too.

Byte fallback: the 256 tokens `<0x00>` .. `<0xFF>` are part of the vocabulary (they count towards
`vocab_size`), so a character the vocabulary lacks encodes as its UTF-8 bytes instead of `[UNK]`, and decoding
gives the normalised text back.

Memory: a BPE trainer counts every distinct pre-tokenized "word". Chinese has no spaces, so without help a
whole sentence is one word and the count table holds every distinct sentence of the corpus (ChatLM-mini-Chinese
needed ~48 GB of RAM for 1.7 GB of text). Here text is cut into jieba words first, and any piece longer than
`max_piece_chars` is cut again, so the table holds distinct *words* and stops growing with the corpus. The
word-frequency count is bounded explicitly: see `WordCounter`.
"""

import itertools
import json
import logging
import multiprocessing
import os
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import jieba
import psutil
import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tqdm import tqdm
from transformers import PreTrainedTokenizerFast

from sccl_hf.errors import ModelFolderError
from sccl_hf.prompt import install_chat_template
from sccl_hf.span_corruption import SENTINEL

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[EOS]", "[SEP]", "[BOS]", "[CLS]", "[MASK]", "[UNK]"]  # [PAD]=0, [EOS]=1
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]
KINDS = ("char_bpe", "byte_bpe", "word_frequency")
BASE_CHARACTERS = ["\t", "\n", "▁", *(chr(c) for c in range(33, 127))]  # always in a char vocabulary


def iter_texts(args) -> Iterator[list[str]]:
    """Yield batches of texts from all files, stopping at `max_chars` characters."""
    for path in args.paths:
        if path.suffix == ".parquet":
            for batch in pq.ParquetFile(path).iter_batches(batch_size=args.batch_rows, columns=args.text_columns):
                texts = [t for column in batch.columns for t in column.to_pylist() if isinstance(t, str) and t]
                yield texts
        else:
            with open(path, encoding="utf-8") as f:
                lines = []
                for line in f:
                    lines.append(line)
                    if len(lines) == args.batch_rows:
                        yield lines
                        lines = []
                if lines:
                    yield lines


def segment(texts: list[str], max_piece_chars: int) -> list[str]:
    """jieba words of `texts`, each cut into pieces of at most `max_piece_chars` characters."""
    n = max_piece_chars
    return [word[i : i + n] for text in texts for word in jieba.cut(text, HMM=False) for i in range(0, len(word), n)]


def iter_pieces(args) -> Iterator[list[str]]:
    """Yield batches of pieces for the trainer (jieba words, cut to `max_piece_chars`), with a progress bar.

    jieba runs in `num_proc` processes over a window of a few batches at a time, so memory stays bounded."""
    processes = args.num_proc or os.cpu_count() or 1
    with tqdm(
        total=args.max_chars or None, unit="char", unit_scale=True, desc="tokenizer corpus", file=sys.stderr
    ) as progress:
        batches = _counted(_capped(iter_texts(args), args.max_chars), progress)
        if args.pretokenize == "none":
            yield from batches
        elif processes == 1:
            yield from (segment(texts, args.max_piece_chars) for texts in batches)
        else:
            jieba.initialize()  # once, before forking, so each worker starts with the dictionary loaded
            with multiprocessing.get_context("fork").Pool(processes) as pool:
                while window := list(itertools.islice(batches, 2 * processes)):
                    yield from pool.starmap(segment, [(texts, args.max_piece_chars) for texts in window])


def _capped(batches: Iterator[list[str]], max_chars: int) -> Iterator[list[str]]:
    seen = 0
    for texts in batches:
        if max_chars and seen >= max_chars:
            return
        if max_chars:
            texts = _cap(texts, max_chars - seen)
        seen += sum(len(t) for t in texts)
        yield texts


def _counted(batches: Iterator[list[str]], progress) -> Iterator[list[str]]:
    for texts in batches:
        progress.update(sum(len(t) for t in texts))
        yield texts


def _cap(texts: list[str], budget: int) -> list[str]:
    kept = []
    for text in texts:
        if budget <= 0:
            break
        kept.append(text[:budget])
        budget -= len(text)
    return kept


def char_pre_tokenizer():
    # prepend_scheme="never": no "▁" is invented at piece starts, so decode(encode(text)) == NFKC(text).
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Punctuation(),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Metaspace(prepend_scheme="never"),
        ]
    )


def char_decoder(byte_fallback: bool):
    metaspace = decoders.Metaspace(prepend_scheme="never")
    if not byte_fallback:
        return metaspace
    return decoders.Sequence([decoders.ByteFallback(), decoders.Fuse(), metaspace])


def new_tokenizer(kind: str) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]" if kind == "char_bpe" else None))
    tokenizer.normalizer = normalizers.NFKC()
    if kind == "char_bpe":
        tokenizer.pre_tokenizer = char_pre_tokenizer()
        tokenizer.decoder = char_decoder(byte_fallback=False)
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train(tokenizer: Tokenizer, args) -> PreTrainedTokenizerFast:
    """Train `tokenizer` (from `new_tokenizer`) on the files of `args` (the tokenizer stage's arguments)."""
    # Tab, newline, the Metaspace space and printable ASCII are always in the vocabulary, whatever the corpus.
    char_level = args.kind == "char_bpe"
    alphabet = BASE_CHARACTERS if char_level else pre_tokenizers.ByteLevel.alphabet()
    fallback = char_level and getattr(args, "byte_fallback", True)
    sentinels = getattr(args, "sentinels", 0)
    learned = args.vocab_size - (len(BYTE_TOKENS) if fallback else 0) - sentinels  # byte and sentinel tokens count too
    # with byte fallback, characters beyond the budget are left to bytes, so the vocabulary is never larger than
    # vocab_size (without it, every character seen joins the alphabet, however rare)
    limit = {"limit_alphabet": learned - len(SPECIAL_TOKENS)} if fallback else {}
    trainer = trainers.BpeTrainer(
        vocab_size=learned,
        min_frequency=args.min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=alphabet,
        show_progress=True,
        **limit,
    )
    tokenizer.train_from_iterator(iter_pieces(args), trainer=trainer)
    if fallback:
        tokenizer = with_byte_fallback(tokenizer)
    return wrap(with_sentinels(tokenizer, sentinels))


def with_sentinels(tokenizer: Tokenizer, count: int) -> Tokenizer:
    """The tokenizer with `count` sentinel tokens `<extra_id_0>` .. appended to its vocabulary, for span corruption.

    Plain vocabulary entries, not added tokens: no merge builds them and the pre-tokenizers split `<`, `_` and `>`
    off, so no text tokenizes into one (an added token would match text that spells it)."""
    if not count:
        return tokenizer
    state = json.loads(tokenizer.to_str())
    vocab = state["model"]["vocab"]
    for index in range(count):
        vocab.setdefault(SENTINEL.format(index), len(vocab))
    sentinel_tokenizer = Tokenizer.from_str(json.dumps(state))
    return sentinel_tokenizer


def with_byte_fallback(tokenizer: Tokenizer) -> Tokenizer:
    """The trained BPE with the 256 byte tokens appended to its vocabulary and `byte_fallback` on (done on the
    serialised form: the tokenizers library has no call that adds plain, non-special tokens to a BPE model)."""
    state = json.loads(tokenizer.to_str())
    vocab = state["model"]["vocab"]
    for token in BYTE_TOKENS:
        vocab.setdefault(token, len(vocab))
    state["model"]["byte_fallback"] = True
    tokenizer = Tokenizer.from_str(json.dumps(state))
    tokenizer.decoder = char_decoder(byte_fallback=True)
    return tokenizer


def wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """A `PreTrainedTokenizerFast` with the project's special tokens, [EOS] template and chat template."""
    install_eos_template(tokenizer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        eos_token="[EOS]",
        unk_token="[UNK]",
        sep_token="[SEP]",
        bos_token="[BOS]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )
    install_chat_template(fast)
    return fast


def install_eos_template(tokenizer: Tokenizer) -> None:
    """Every encoded prompt and response ends in [EOS], however it is tokenized (training, chat, serving)."""
    eos_id = tokenizer.token_to_id("[EOS]")
    if eos_id is None:
        raise ModelFolderError("the tokenizer has no [EOS] token")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A [EOS]", pair="$A [EOS] $B [EOS]", special_tokens=[("[EOS]", eos_id)]
    )


def ends_with_eos(tokenizer) -> bool:
    ids = tokenizer("测试 a")["input_ids"]
    return bool(ids) and ids[-1] == tokenizer.eos_token_id


def ensure_eos_template(tokenizer, source: str = "tokenizer") -> bool:
    """Every stage relies on [EOS] closing each encoded prompt and response. A tokenizer without that
    post-processor (ChatLM-mini-Chinese's published tokenizer.json has none) gets it here, and says so.
    Returns True when it had to be installed."""
    if ends_with_eos(tokenizer):
        return False
    install_eos_template(tokenizer.backend_tokenizer)
    if not ends_with_eos(tokenizer):
        raise ModelFolderError(f"{source}: could not make the tokenizer close its encodings with [EOS]")
    logger.warning(
        "%s: the tokenizer did not end its encodings with [EOS]; the [EOS] template is installed (every stage "
        "relies on it, and it is saved with the model)",
        source,
    )
    return True


def save_tokenizer(tokenizer, output_dir: str | Path) -> None:
    """Save a tokenizer as a downstream user should get it: no truncation or padding left over from training
    (a fast tokenizer keeps the last call's settings and would write them into tokenizer.json), and a class name
    that transformers 4.x knows too (transformers 5 writes `TokenizersBackend`)."""
    backend = tokenizer.backend_tokenizer
    backend.no_truncation()
    backend.no_padding()
    tokenizer.save_pretrained(output_dir)
    config_path = Path(output_dir) / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("max_length", "stride", "truncation_strategy"):
        config.pop(key, None)
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def peak_rss_mb() -> float:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    except ImportError:  # Windows
        return psutil.Process().memory_info().peak_wset / 2**20


# -- word frequency (SCCLM) -------------------------------------------------------------------------------------


class WordCounter:
    """Counts of characters and words with a bounded table (lossy counting).

    Characters are few (tens of thousands) and counted exactly. Words are counted in a table of at most
    `max_words` entries: when it is full, every word counted `c` times or fewer is dropped, where `c` is the median
    count, and `c` is added to `error_bound`. A word dropped and seen again starts from zero, so every count is
    low by at most `error_bound` (the sum of the medians used), and never high. Hence a word counted at least
    `min_count` times was seen at least that often, and a word seen at least `min_count + error_bound` times is
    always kept."""

    def __init__(self, max_words: int = 2_000_000):

        self.characters, self.words = Counter(), Counter()
        self.max_words, self.error_bound, self.prunings, self.total_words = max_words, 0, 0, 0

    def add(self, text: str, words: list[str]) -> None:
        """Count the characters of `text` and the `words`."""
        self.characters.update(text)
        self.total_words += len(words)
        self.words.update(words)
        if len(self.words) > self.max_words:
            self.prune()

    def prune(self) -> None:
        import numpy as np

        counts = np.fromiter(self.words.values(), dtype=np.int64, count=len(self.words))
        cut = int(np.partition(counts, counts.size // 2)[counts.size // 2])
        self.words = type(self.words)({w: c for w, c in self.words.items() if c > cut})
        self.error_bound += cut
        self.prunings += 1


def count_words(args) -> WordCounter:
    """Characters and jieba words of the corpus, NFKC-normalised as the tokenizer normalises (pieces the
    tokenizer's pre-tokenizer would split, such as words with digits or punctuation, are not words here)."""

    if args.jieba_user_dict:
        jieba.load_userdict(args.jieba_user_dict)
    counter = WordCounter(args.max_count_entries)
    splitter = char_pre_tokenizer()
    for pieces in iter_pieces(args):
        normalised = [unicodedata.normalize("NFKC", p).replace(" ", "▁") for p in pieces]
        words = [p for p in normalised if len(p) > 1 and len(splitter.pre_tokenize_str(p)) == 1]
        counter.add("".join(normalised), words)
    return counter


def word_frequency_vocabulary(
    counter: WordCounter, vocab_size: int, min_count: int, sentinels: int = 0
) -> tuple[dict, list]:
    """(vocab, merges): special tokens, byte tokens, the base characters, then characters and words counted at
    least `min_count` times, most frequent first, up to `vocab_size` in all; merges split each kept word into two
    kept parts, ordered by the word's count (then position), so encoding is deterministic."""
    fixed = [*SPECIAL_TOKENS, *BYTE_TOKENS, *BASE_CHARACTERS]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(fixed))}
    room = vocab_size - len(vocab) - sentinels
    characters = [(c, n) for c, n in counter.characters.items() if n >= min_count and c not in vocab and c != " "]
    words = [(w, n) for w, n in counter.words.items() if n >= min_count]
    for token, _ in sorted(characters + words, key=lambda item: (-item[1], item[0]))[: max(room, 0)]:
        vocab.setdefault(token, len(vocab))
    counts = {w: n for w, n in words}
    merges = []
    for word in sorted((w for w in vocab if w in counts), key=lambda w: (-counts[w], w)):
        merges += [(word[:i], word[i:]) for i in range(1, len(word)) if word[:i] in vocab and word[i:] in vocab]
    for index in range(sentinels):  # last, after every merge is known: no merge builds them
        vocab.setdefault(SENTINEL.format(index), len(vocab))
    return vocab, merges


def word_frequency_tokenizer(vocab: dict, merges: list) -> PreTrainedTokenizerFast:
    model = models.BPE(vocab=vocab, merges=merges, unk_token="[UNK]", byte_fallback=True, ignore_merges=True)
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = char_pre_tokenizer()
    tokenizer.decoder = char_decoder(byte_fallback=True)
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    return wrap(tokenizer)
