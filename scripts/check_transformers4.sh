#!/usr/bin/env bash
# Saved model folders must stay loadable by downstream users still on transformers 4.57. This builds a small
# model folder with this project's environment, then loads it and generates in a second, cached environment
# that has transformers 4.57 (and the tokenizers / huggingface_hub it needs) and borrows everything else,
# torch included, from the project's environment.
#   PYTHON=.venv/bin/python bash scripts/check_transformers4.sh
set -euo pipefail
PYTHON=${PYTHON:-python}
COMPAT=${SCCL_COMPAT_VENV:-$HOME/.cache/sccl-hf/venv-transformers4.57}
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -x "$COMPAT/bin/python" ] || ! "$COMPAT/bin/python" -c "import transformers, sys; sys.exit(not transformers.__version__.startswith('4.57'))" 2>/dev/null; then
    echo "creating $COMPAT (transformers 4.57)"
    "$PYTHON" -m venv --without-pip --clear "$COMPAT"
    site=$("$COMPAT/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    "$PYTHON" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > "$site/borrowed.pth"
    "$PYTHON" -m pip --python "$COMPAT/bin/python" install --quiet --ignore-installed \
        "transformers==4.57.*" "tokenizers>=0.22,<=0.23.0" "huggingface_hub>=0.34,<1.0"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" - "$work" <<'PY'
import json, sys
from pathlib import Path
from transformers import set_seed
from sccl_hf.demo_corpus import write_corpus
from sccl_hf.stages.tokenizer import TokenizerArguments, main as train_tokenizer
from sccl_hf.model import build_config, load_tokenizer, new_model, save_model_dir
work = Path(sys.argv[1])
data = write_corpus(work / "data")
train_tokenizer(TokenizerArguments(files=[str(data["sft"])], vocab_size=400, output_dir=str(work / "tok")))
set_seed(0)
tokenizer = load_tokenizer(work / "tok")
model = new_model(build_config("tiny", tokenizer, max_seq_len=32)).eval()
save_model_dir(model, tokenizer, work / "model")
batch = tokenizer(["浙江的省会是哪里？"], return_tensors="pt")
out = model.my_generate(batch["input_ids"], batch["attention_mask"], max_seq_len=8, search_type="greedy")
expected = {"prompt": "浙江的省会是哪里？", "input_ids": batch["input_ids"][0].tolist(), "greedy": out[0].tolist()}
(work / "expected.json").write_text(json.dumps(expected, ensure_ascii=False))
PY
cd "$work" && "$COMPAT/bin/python" "$here/check_transformers4.py" "$work/model" "$work/expected.json"
