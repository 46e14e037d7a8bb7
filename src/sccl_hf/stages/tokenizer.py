"""Stage `tokenizer`: train a char-level or byte-level BPE tokenizer on parquet or txt files.

Reads: parquet (its `text_columns`) or .txt files. Writes: a `PreTrainedTokenizerFast` directory with `[PAD]`=0,
`[EOS]`=1, the `[EOS]` post-processor and the project's chat template. Memory stays bounded: text is cut into
jieba words first, so the trainer counts distinct words, not distinct sentences (see sccl_hf.tokenization).
"""

from dataclasses import dataclass, field

import pyarrow.parquet as pq

from sccl_hf.recipes import resolve_files


# -- arguments --------------------------------------------------------------------------------------------------
@dataclass
class TokenizerArguments:
    files: list[str] = field(default_factory=list, metadata={"help": "parquet or txt files, directories or globs"})
    text_columns: list[str] = field(
        default_factory=lambda: ["prompt", "response"], metadata={"help": "parquet columns"}
    )
    output_dir: str = "tokenizer"
    kind: str = field(default="char_bpe", metadata={"help": "char_bpe (NFKC, Metaspace) or byte_bpe"})
    vocab_size: int = 29_298
    min_frequency: int = 2
    max_chars: int = field(default=0, metadata={"help": "stop after this many characters (0: read everything)"})
    pretokenize: str = field(default="jieba", metadata={"help": "jieba (bounded memory) or none (whole sentences)"})
    max_piece_chars: int = field(default=16, metadata={"help": "longest piece handed to the trainer"})
    num_proc: int = field(default=0, metadata={"help": "processes for jieba segmentation (0: one per core)"})
    batch_rows: int = 1000

    def __post_init__(self):
        if self.kind not in ("char_bpe", "byte_bpe"):
            raise ValueError(f"kind: must be char_bpe or byte_bpe, got '{self.kind}'")
        if self.pretokenize not in ("jieba", "none"):
            raise ValueError(f"pretokenize: must be jieba or none, got '{self.pretokenize}'")
        if not self.files:
            raise ValueError("files: give at least one parquet or txt file")
        self.paths = resolve_files(self.files, "files", suffixes=(".parquet", ".txt"))
        for path in self.paths:
            if path.suffix == ".parquet":
                missing = set(self.text_columns) - set(pq.ParquetFile(path).schema_arrow.names)
                if missing:
                    raise ValueError(f"{path}: no column(s) {sorted(missing)}; text_columns are {self.text_columns}")


RECIPE_ARGUMENTS = (TokenizerArguments,)


def main(args: TokenizerArguments) -> dict:
    import time
    from pathlib import Path

    from sccl_hf.tokenization import new_tokenizer, peak_rss_mb, save_tokenizer, train

    # 1. inputs: the files resolved by the arguments, read in batches (and cut into jieba words) while training
    started = time.perf_counter()
    # 2. model: an empty BPE tokenizer of the chosen kind
    tokenizer = new_tokenizer(args.kind)
    # 3. work
    tokenizer = train(tokenizer, args)
    # 4. save
    save_tokenizer(tokenizer, args.output_dir)
    # 5. summary
    results = {
        "vocab_size": len(tokenizer),
        "kind": args.kind,
        "files": [str(p) for p in args.paths],
        "train_seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mb": round(peak_rss_mb()),
    }
    print(
        f"tokenizer saved to {Path(args.output_dir).resolve()} (vocab {len(tokenizer)}, peak RSS {results['peak_rss_mb']} MB)"
    )
    return results
