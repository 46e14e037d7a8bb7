"""Does a model copy its input? Masked held-out text in (`tables.mask_spans`, as `reconstruction_share` makes
it), greedy answer out, character ROUGE-L against the original text. A model that copies scores near 1; the mini
chain's pretrained models scored 0.039 and 0.032 (dev/LOG.md, 2026-12-06), which is why they cannot copy
entities for triple extraction.

    python dev/reconstruction_check.py MODEL_DIR [TABLE]      (TABLE: default runs/mini/data/pretrain/valid)
"""

import random
import sys

import pyarrow.parquet as pq
import torch

from sccl_hf.metrics import rouge_l_chars
from sccl_hf.model import load_model, load_tokenizer
from sccl_hf.tables import mask_spans


def main(model_dir: str, table: str = "runs/mini/data/pretrain/valid", rows: int = 48) -> None:
    tokenizer, model = load_tokenizer(model_dir), load_model(model_dir).eval()
    texts = [t for t in pq.read_table(table).column("response").to_pylist() if len(t) > 20][:rows]
    rng = random.Random(0)
    ids = [mask_spans(tokenizer(t, truncation=True, max_length=128)["input_ids"], tokenizer.mask_token_id, rng)
           for t in texts]  # fmt: skip
    batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt")
    with torch.no_grad():
        out = model.my_generate(batch["input_ids"], batch["attention_mask"], max_seq_len=128, search_type="greedy")
    answers = [a.replace(" ", "") for a in tokenizer.batch_decode(out, skip_special_tokens=True)]
    print(f"{model_dir}: reconstruction ROUGE-L {rouge_l_chars(answers, texts):.3f} on {len(texts)} texts")
    for answer, text in list(zip(answers, texts))[:3]:
        print(f"  {text[:60]}  =>  {answer[:60]}")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    main(*sys.argv[1:])
