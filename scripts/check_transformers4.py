"""Run in an environment with transformers 4.57: a model folder saved by sccl-hf (under transformers 5) loads
with AutoTokenizer and AutoModelForSeq2SeqLM(trust_remote_code=True), generates with every search type, and its
greedy answer equals the one written by the saving environment.

    python scripts/check_transformers4.py MODEL_DIR EXPECTED_JSON
"""

import json
import sys

import torch
import transformers
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

model_dir, expected_file = sys.argv[1:3]
expected = json.loads(open(expected_file, encoding="utf-8").read())
assert transformers.__version__.startswith("4."), transformers.__version__
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, trust_remote_code=True).eval()
batch = tokenizer([expected["prompt"]], return_tensors="pt")
assert batch["input_ids"][0, -1].item() == tokenizer.eos_token_id == 1, "encodings must end in [EOS]"
assert batch["input_ids"][0].tolist() == expected["input_ids"], (batch["input_ids"][0].tolist(), expected["input_ids"])
for search_type in ("greedy", "beam", "sampling", "contrastive"):
    torch.manual_seed(0)
    out = model.my_generate(batch["input_ids"], batch["attention_mask"], max_seq_len=8, search_type=search_type)
    assert out[0, 0].item() == 0, search_type
    if search_type == "greedy":
        assert out[0].tolist() == expected["greedy"], (out[0].tolist(), expected["greedy"])
print(f"transformers {transformers.__version__}: {type(model).__name__} from {model_dir} loads and generates")
