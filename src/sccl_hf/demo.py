"""The end-to-end demo on CPU: generate a corpus, train a tokenizer, pretrain, SFT, answer held-out questions,
make DPO data from the model's own mistakes, train DPO, answer again, and ask `sccl serve` one question.

Each stage runs from its recipe in recipes/demo/, with paths pointed into one output directory.
"""

import csv
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

from sccl_hf.demo_corpus import write_corpus
from sccl_hf.inference import answer_prompts, exact_match
from sccl_hf.model import load_model, load_tokenizer
from sccl_hf.stages import run_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "demo"


def logged(stage_dir: Path, key: str) -> list[float]:
    """Every value of `key` in a stage's training_log.csv."""
    path = stage_dir / "training_log.csv"
    if not path.is_file():
        return []
    with open(path) as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


def evaluate(model_dir: Path, held_out: Path) -> tuple[float, list[tuple[str, str, str]]]:
    rows = pq.read_table(held_out).to_pylist()
    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    answers = answer_prompts(model, tokenizer, [r["prompt"] for r in rows], search_type="greedy", max_new_tokens=16)
    accuracy = exact_match(answers, [r["response"] for r in rows])
    return accuracy, [(r["prompt"], a, r["response"]) for r, a in zip(rows, answers)]


def ask_the_server(model_dir: Path, question: str) -> str:
    """Start `sccl serve` on a free local port, ask one question through /api/chat, stop the server."""
    import httpx

    from sccl_hf.serve import LocalServer

    with LocalServer(model_dir) as server:
        return httpx.post(f"{server.url}/api/chat", json={"input_txt": question}, timeout=60).json()["response"]


def run_demo(output_dir: str | Path = "runs/demo", seed: int = 0) -> dict:
    started = time.perf_counter()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    out = Path(output_dir).resolve()
    data = write_corpus(out / "data", seed=seed)
    timings = {}

    def stage(name: str, *overrides: str):
        t = time.perf_counter()
        print(f"\n=== {name} ===", flush=True)
        output = [] if "--output_file" in overrides else ["--output_dir", str(out / name)]
        run_recipe(str(RECIPES / f"{name}.yaml"), [*overrides, *output])
        timings[name] = time.perf_counter() - t

    stage("tokenizer", "--files", str(data["pretrain"]), str(data["sft"]))
    stage("pretrain", "--tokenizer_dir", str(out / "tokenizer"), "--train_files", str(data["pretrain"]))
    stage("sft", "--model_name_or_path", str(out / "pretrain"), "--train_files", str(data["sft"]))
    sft_accuracy, samples = evaluate(out / "sft", data["held_out"])
    # DPO: rejected answers are the SFT model's own mistakes on its training questions, plus wrong answers
    # from the corpus generator.
    mistakes = out / "dpo_data" / "mistakes.jsonl"
    stage("dpo_data", "--model_name_or_path", str(out / "sft"), "--reference_files", str(data["sft"]),
          "--output_file", str(mistakes))
    stage("dpo", "--model_name_or_path", str(out / "sft"), "--train_files", str(data["dpo"]), str(mistakes))
    dpo_accuracy, dpo_samples = evaluate(out / "dpo", data["held_out"])
    reward_accuracy = logged(out / "dpo", "rewards/accuracies")
    api_question = samples[0][0]
    api_answer = ask_the_server(out / "dpo", api_question)
    elapsed = time.perf_counter() - started

    print("\n=== demo report ===")
    for name in ("pretrain", "sft", "dpo"):
        losses = logged(out / name, "loss")
        print(f"{name:9s} final loss {losses[-1]:.4f}  ({timings[name]:.0f} s)")
    print(f"held-out exact match after SFT: {sft_accuracy:.1%} on {len(samples)} unseen question phrasings")
    print(f"DPO reward accuracy: {reward_accuracy[0]:.0%} at the first logged steps -> {reward_accuracy[-1]:.0%} at the last")
    print(f"held-out exact match after DPO: {dpo_accuracy:.1%}")
    for prompt, answer, reference in dpo_samples[:3]:
        print(f"  Q: {prompt}  A: {answer}  (reference: {reference})")
    print(f"HTTP API (sccl serve): POST /api/chat {{\"input_txt\": \"{api_question}\"}} -> {api_answer}")
    print(f"elapsed: {elapsed:.0f} s")
    print(f"outputs: {out}")
    sccl = Path(sys.executable).parent / "sccl"  # the command of this environment, activated or not
    print(f"next: {sccl} chat --model {out / 'dpo'}")
    print(f"  or: {sccl} serve --model {out / 'dpo'}   (then open http://127.0.0.1:8812/)")
    return {
        "accuracy": dpo_accuracy, "sft_accuracy": sft_accuracy, "reward_accuracy": reward_accuracy,
        "elapsed": elapsed, "output_dir": str(out), "samples": dpo_samples,
    }
