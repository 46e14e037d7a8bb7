"""Stage `tokenizer`: a char-level BPE, byte-level BPE or word-frequency (SCCLM) tokenizer from parquet or txt.

Reads: parquet (its `text_columns`; the data stage's output folders as they are) or .txt files. Writes: a
`PreTrainedTokenizerFast` directory with `[PAD]`=0, `[EOS]`=1, the `[EOS]` post-processor, byte fallback (no text
maps to `[UNK]`) and the project's chat template. Memory stays bounded: text is cut into jieba words first, so
the trainer counts distinct words, not distinct sentences, and the word-frequency count prunes rare words as it
goes, with a stated error bound (see sccl_hf.tokenization).
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from sccl_hf.recipes import required_files


# -- arguments --------------------------------------------------------------------------------------------------
@dataclass
class TokenizerArguments:
    files: list[str] = field(default_factory=list, metadata={"help": "parquet or txt files, directories or globs"})
    text_columns: list[str] = field(
        default_factory=lambda: ["prompt", "response"], metadata={"help": "parquet columns"}
    )
    output_dir: str = "tokenizer"
    kind: str = field(default="char_bpe", metadata={"help": "char_bpe, byte_bpe or word_frequency (SCCLM)"})
    vocab_size: int = field(default=29_298, metadata={"help": "all tokens: special, byte fallback and learned"})
    min_frequency: int = field(default=2, metadata={"help": "BPE kinds: a merge needs this many occurrences"})
    min_count: int = field(default=1500, metadata={"help": "word_frequency: keep characters and words seen this often"})
    max_count_entries: int = field(
        default=2_000_000, metadata={"help": "word_frequency: words held while counting (bounds memory)"}
    )
    jieba_user_dict: str | None = field(default=None, metadata={"help": "jieba user dictionary (one word per line)"})
    sentinels: int = field(
        default=0,
        metadata={"help": "sentinel tokens <extra_id_0>.. for span corruption (T5: 100); they count in vocab_size"},
    )
    byte_fallback: bool = field(default=True, metadata={"help": "char_bpe: <0x..> tokens for unseen characters"})
    max_chars: int = field(default=0, metadata={"help": "stop after this many characters (0: read everything)"})
    pretokenize: str = field(default="jieba", metadata={"help": "jieba (bounded memory) or none (whole sentences)"})
    max_piece_chars: int = field(default=16, metadata={"help": "longest piece handed to the trainer"})
    num_proc: int = field(default=0, metadata={"help": "processes for jieba segmentation (0: one per core)"})
    batch_rows: int = 1000

    def __post_init__(self):
        if self.kind not in ("char_bpe", "byte_bpe", "word_frequency"):
            raise ValueError(f"kind: must be char_bpe, byte_bpe or word_frequency, got '{self.kind}'")
        if self.kind == "word_frequency" and self.pretokenize != "jieba":
            raise ValueError("pretokenize: word_frequency counts jieba words (pretokenize: jieba)")
        from sccl_hf.tokenization import BASE_CHARACTERS, BYTE_TOKENS, SPECIAL_TOKENS

        if self.sentinels < 0:
            raise ValueError(f"sentinels: {self.sentinels} is negative")
        fixed = len(SPECIAL_TOKENS) + len(BASE_CHARACTERS) + (len(BYTE_TOKENS) if self.kind != "byte_bpe" else 256)
        fixed += self.sentinels
        if self.vocab_size <= fixed:
            raise ValueError(
                f"vocab_size: {self.vocab_size} leaves nothing to learn: the special, byte-fallback, sentinel and "
                f"base tokens alone are {fixed}"
            )
        if self.jieba_user_dict and not Path(self.jieba_user_dict).is_file():
            raise FileNotFoundError(f"jieba_user_dict: no such file: '{self.jieba_user_dict}'")
        if self.pretokenize not in ("jieba", "none"):
            raise ValueError(f"pretokenize: must be jieba or none, got '{self.pretokenize}'")
        self.paths = required_files(self.files, "files", suffixes=(".parquet", ".txt"))
        for path in self.paths:
            if path.suffix == ".parquet":
                missing = set(self.text_columns) - set(pq.ParquetFile(path).schema_arrow.names)
                if missing:
                    raise ValueError(f"{path}: no column(s) {sorted(missing)}; text_columns are {self.text_columns}")


RECIPE_ARGUMENTS = (TokenizerArguments,)


def main(args: TokenizerArguments) -> dict:

    from sccl_hf import tokenization

    # 1. inputs: the files resolved by the arguments, read in batches (and cut into jieba words) while training
    started = time.perf_counter()
    extra = {}
    if args.kind == "word_frequency":
        # 2. model and 3. work: count, keep, derive the merges
        counter = tokenization.count_words(args)
        vocab, merges = tokenization.word_frequency_vocabulary(counter, args.vocab_size, args.min_count, args.sentinels)
        tokenizer = tokenization.word_frequency_tokenizer(vocab, merges)
        words = sum(1 for token in vocab if len(token) > 1 and not token.startswith(("<0x", "[")))
        extra = {
            "kept_words": words,
            "merges": len(merges),
            "count_error_bound": counter.error_bound,
            "count_prunings": counter.prunings,
            "words_counted": counter.total_words,
        }
        if counter.error_bound:
            print(f"word counts are low by at most {counter.error_bound} ({counter.prunings} prunings of the table)")
    else:
        # 2. model: an empty BPE tokenizer of the chosen kind; 3. work: train it
        tokenizer = tokenization.train(tokenization.new_tokenizer(args.kind), args)
    # 4. save
    tokenization.save_tokenizer(tokenizer, args.output_dir)
    # 5. summary
    results = {
        "vocab_size": len(tokenizer),
        "kind": args.kind,
        "sentinels": args.sentinels,
        "files": [str(p) for p in args.paths],
        "train_seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mb": round(tokenization.peak_rss_mb()),
        **extra,
    }
    print(
        f"tokenizer saved to {Path(args.output_dir).resolve()} (vocab {len(tokenizer)}, peak RSS {results['peak_rss_mb']} MB)"
    )
    return results
