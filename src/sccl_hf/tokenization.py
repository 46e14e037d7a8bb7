"""Training char-level or byte-level BPE tokenizers (the machinery of `stage: tokenizer`).

Memory: a BPE trainer counts every distinct pre-tokenized "word". Chinese has no spaces, so without help a
whole sentence is one word and the count table holds every distinct sentence of the corpus (ChatLM-mini-Chinese
needed ~48 GB of RAM for 1.7 GB of text). Here text is cut into jieba words first, and any piece longer than
`max_piece_chars` is cut again, so the table holds distinct *words* and stops growing with the corpus.
"""

import itertools
import json
import logging
import multiprocessing
import os
import sys
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

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[EOS]", "[SEP]", "[BOS]", "[CLS]", "[MASK]", "[UNK]"]  # [PAD]=0, [EOS]=1


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


def new_tokenizer(kind: str) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]" if kind == "char_bpe" else None))
    tokenizer.normalizer = normalizers.NFKC()
    if kind == "char_bpe":
        # prepend_scheme="never": no "▁" is invented at piece starts, so decode(encode(text)) == NFKC(text).
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Punctuation(),
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.Metaspace(prepend_scheme="never"),
            ]
        )
        tokenizer.decoder = decoders.Metaspace(prepend_scheme="never")
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train(tokenizer: Tokenizer, args) -> PreTrainedTokenizerFast:
    """Train `tokenizer` (from `new_tokenizer`) on the files of `args` (the tokenizer stage's arguments)."""
    # Tab, newline, the Metaspace space and printable ASCII are always in the vocabulary, whatever the corpus.
    ascii_chars = [chr(c) for c in range(33, 127)]
    alphabet = ["\t", "\n", "▁", *ascii_chars] if args.kind == "char_bpe" else pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab_size,
        min_frequency=args.min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=alphabet,
        show_progress=True,
    )
    tokenizer.train_from_iterator(iter_pieces(args), trainer=trainer)
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
