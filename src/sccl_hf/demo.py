"""The end-to-end demo on CPU: generate a corpus, train a tokenizer, pretrain, SFT, answer held-out questions.

Each stage runs from its recipe in recipes/demo/, with paths pointed into one output directory.
"""

import csv
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

from sccl_hf.demo_corpus import write_corpus
from sccl_hf.inference import answer_prompts, exact_match
from sccl_hf.model import load_model, load_tokenizer
from sccl_hf.stages import run_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "demo"


def final_loss(stage_dir: Path) -> float | None:
    path = stage_dir / "training_log.csv"
    if not path.is_file():
        return None
    losses = [float(row["loss"]) for row in csv.DictReader(open(path)) if row.get("loss")]
    return losses[-1] if losses else None


def evaluate(model_dir: Path, held_out: Path) -> tuple[float, list[tuple[str, str, str]]]:
    rows = pq.read_table(held_out).to_pylist()
    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    answers = answer_prompts(model, tokenizer, [r["prompt"] for r in rows], search_type="greedy", max_new_tokens=16)
    accuracy = exact_match(answers, [r["response"] for r in rows])
    return accuracy, [(r["prompt"], a, r["response"]) for r, a in zip(rows, answers)]


def run_demo(output_dir: str | Path = "runs/demo", seed: int = 0) -> dict:
    started = time.perf_counter()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    out = Path(output_dir).resolve()
    data = write_corpus(out / "data", seed=seed)
    timings, losses = {}, {}

    def stage(name: str, *overrides: str):
        t = time.perf_counter()
        print(f"\n=== {name} ===", flush=True)
        run_recipe(str(RECIPES / f"{name}.yaml"), [*overrides, "--output_dir", str(out / name)])
        timings[name] = time.perf_counter() - t
        losses[name] = final_loss(out / name)

    stage("tokenizer", "--files", str(data["pretrain"]), str(data["sft"]))
    stage("pretrain", "--tokenizer_dir", str(out / "tokenizer"), "--train_files", str(data["pretrain"]))
    stage("sft", "--model_name_or_path", str(out / "pretrain"), "--train_files", str(data["sft"]))
    accuracy, samples = evaluate(out / "sft", data["held_out"])
    elapsed = time.perf_counter() - started

    print("\n=== demo report ===")
    for name in ("pretrain", "sft"):
        print(f"{name:9s} final loss {losses[name]:.4f}  ({timings[name]:.0f} s)")
    print(f"held-out exact match: {accuracy:.1%} on {len(samples)} unseen question phrasings")
    for prompt, answer, reference in samples[:3]:
        print(f"  Q: {prompt}  A: {answer}  (reference: {reference})")
    print(f"elapsed: {elapsed:.0f} s")
    print(f"outputs: {out}  (chat with: sccl chat --model {out / 'sft'})")
    return {"accuracy": accuracy, "losses": losses, "elapsed": elapsed, "output_dir": str(out), "samples": samples}
