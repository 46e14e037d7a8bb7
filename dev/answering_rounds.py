"""How many training steps the answering fixture needs on this machine (tests/helpers/answering.py), per seed.

    .venv/bin/python dev/answering_rounds.py [--seeds 4]
    ATEN_CPU_CAPABILITY=default .venv/bin/python dev/answering_rounds.py     # as on a machine that rounds otherwise

Prints, for each seed, the first step at which every property the tests need held (or what still failed at the
bound): the figures behind the fixture's bound of 600 steps (dev/LOG.md, 2026-12-07).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    from transformers import set_seed

    from conftest import ANSWERING_PROMPTS, ANSWERING_TARGETS
    from helpers import answering
    from sccl_hf.demo_corpus import write_corpus
    from sccl_hf.model import build_config, load_tokenizer, new_model
    from sccl_hf.stages.tokenizer import TokenizerArguments
    from sccl_hf.stages.tokenizer import main as train_tokenizer

    folder = Path(tempfile.mkdtemp())
    data = write_corpus(folder / "data")
    train_tokenizer(TokenizerArguments(files=[str(data["pretrain"]), str(data["sft"])], vocab_size=856,
                                       output_dir=str(folder / "tokenizer")))  # fmt: skip
    tokenizer = load_tokenizer(folder / "tokenizer")
    for seed in range(args.seeds):
        set_seed(seed)
        model = new_model(build_config("tiny", tokenizer, max_seq_len=64))
        started = time.perf_counter()
        steps, reached = answering.fit(model, tokenizer, ANSWERING_PROMPTS, ANSWERING_TARGETS, max_steps=600)
        outcome = "all properties hold" if reached.ok else f"still failing: {reached.failing()}"
        print(f"seed {seed}: {steps} steps, {outcome} ({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
