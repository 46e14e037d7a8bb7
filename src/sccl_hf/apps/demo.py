"""`sccl demo`: the end-to-end CPU demo, as the plain list of `sccl run` steps below (rerun any of them by hand),
then its checks: held-out accuracy before and after DPO, perplexity, a quick C-Eval pass (skipped, saying so, when
the C-Eval files are not there), one question over HTTP to `sccl serve`, and the report card. It exits with 1,
naming the figure, when held-out exact match after SFT is under 80%, when DPO lowers it by more than 2 points, or
when the HTTP API's answer is not the one the evaluation scored as right.

Everything is written under `runs/demo/` of the current directory. The recipes are `recipes/demo/*.yaml` (from
an installed package: the copies shipped inside it).
"""

import csv
import json
import shlex
import sys
import time
from pathlib import Path

STEPS = [
    "sccl run recipes/demo/data.yaml",  # generate the corpus: pretrain, sft, held_out, dpo
    "sccl run recipes/demo/tokenizer.yaml",  # char-level BPE with 256 byte-fallback tokens (810 in all)
    "sccl run recipes/demo/pretrain.yaml",  # the `small` preset on fact statements
    "sccl run recipes/demo/sft.yaml",  # questions and answers
    "sccl run recipes/demo/eval_sft.yaml",  # held-out questions, exact match
    "sccl run recipes/demo/dpo_data.yaml",  # rejected answers: the SFT model's own mistakes
    "sccl run recipes/demo/dpo.yaml",  # DPO (+ an SFT term) on them and on generated wrong answers
    "sccl run recipes/demo/eval_dpo.yaml",  # held-out questions again
    "sccl run recipes/demo/eval_ppl.yaml",  # perplexity and bits per character on the held-out answers
    "sccl run recipes/demo/ceval.yaml",  # a quick C-Eval pass (4 questions per subject): expect chance
    "sccl report runs/demo",  # every stage's figures, tables and plots in runs/demo/report.md and report.html
]
OUTPUT = Path("runs/demo")


def logged(stage_dir: Path, key: str) -> list[float]:
    """Every value of `key` in a stage's training_log.csv."""
    path = stage_dir / "training_log.csv"
    if not path.is_file():
        return []
    with open(path) as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


def results(stage_dir: Path) -> dict:
    return json.loads((stage_dir / "results.json").read_text(encoding="utf-8"))


def ask_the_server(model_dir: Path, question: str) -> str:
    """Start `sccl serve` on a free local port, ask one question through /api/chat, stop the server."""
    import httpx

    from sccl_hf.apps.serve import LocalServer

    with LocalServer(model_dir) as server:
        return httpx.post(f"{server.url}/api/chat", json={"input_txt": question}, timeout=60).json()["response"]


def missing_exam_files(step: str) -> str | None:
    """The exam folder a step reads when it is not there (C-Eval is public data the demo does not generate)."""
    from sccl_hf.recipes import read_recipe
    from sccl_hf.stages import find_recipe

    words = shlex.split(step)
    if words[1] != "run":
        return None
    data_dir = read_recipe(find_recipe(words[2])).get("data_dir")
    return data_dir if data_dir and not Path(data_dir).is_dir() else None


def run_step(step: str) -> None:
    """One line of STEPS, run in this process as `sccl` would run it: a recipe through the stage runner, or the
    report card."""
    from sccl_hf.report import build_report
    from sccl_hf.stages import run_recipe

    command, target, *overrides = shlex.split(step)[1:]
    if command == "run":
        run_recipe(target, overrides)
    elif command == "report":
        paths = build_report(target)
        print(f"report: {paths[0]} and {paths[1]}")
    else:
        raise ValueError(f"demo step '{step}': only `sccl run` and `sccl report` steps are known")


# What a healthy demo run reaches (dev/LOG.md: held-out exact match after SFT was 90-95% over runs)
MIN_SFT_EXACT_MATCH = 0.80
MAX_DPO_DROP = 0.02


def demo_failures(sft_accuracy: float, dpo_accuracy: float, api_question: str, api_answer: str, evaluated: str):
    """The figures that say the demo did not work, each naming itself. `evaluated`: the answer the evaluation got
    to the question asked over HTTP (one it scored as right, when there is one)."""
    failures = []
    if sft_accuracy < MIN_SFT_EXACT_MATCH:
        failures.append(
            f"held-out exact match after SFT is {sft_accuracy:.1%}, under {MIN_SFT_EXACT_MATCH:.0%}: the model did "
            "not learn the demo's questions"
        )
    if dpo_accuracy < sft_accuracy - MAX_DPO_DROP:
        failures.append(
            f"DPO lowered held-out exact match by {sft_accuracy - dpo_accuracy:.1%} ({sft_accuracy:.1%} -> "
            f"{dpo_accuracy:.1%}), more than {MAX_DPO_DROP:.0%}"
        )
    if api_answer.strip() != evaluated.strip():
        failures.append(
            f"the HTTP API answered '{api_answer}' to '{api_question}', not '{evaluated}' (the evaluation's answer)"
        )
    return failures


def run_demo(overrides: dict[str, list[str]] | None = None) -> dict:
    """Run STEPS, report, then check the figures: exits with 1, naming each failed figure, when the model did not
    learn. `overrides`: extra `--key value` words per recipe file name (tests use it to make a quick or broken run)."""
    started = time.perf_counter()
    for step in STEPS:
        print(f"\n=== {step} ===", flush=True)
        missing = missing_exam_files(step)
        if missing:
            print(f"skipped: the C-Eval files are not at '{missing}' (see ../shared/data/README.md, or run the "
                  "recipe with --data_dir pointing at your copy)")  # fmt: skip
            continue
        run_step(step + "".join(f" {shlex.quote(w)}" for w in (overrides or {}).get(step.rsplit("/", 1)[-1], [])))

    # The checks
    out = OUTPUT.resolve()
    sft_eval, dpo_eval = results(out / "eval" / "sft"), results(out / "eval" / "dpo")
    with open(out / "eval" / "dpo" / "predictions.jsonl", encoding="utf-8") as f:
        samples = [json.loads(line) for line in f]
    reward_accuracy = logged(out / "dpo", "rewards/accuracies")
    # a question the evaluation scored as right (when there is one): the server must give that very answer
    api_sample = next((s for s in samples if s["match"]), samples[0])
    api_question = api_sample["prompt"]
    api_answer = ask_the_server(out / "dpo", api_question)
    elapsed = time.perf_counter() - started

    print("\n=== demo report ===")
    for name in ("pretrain", "sft", "dpo"):
        record = results(out / name)
        loss = record["results"]["final_loss"]
        loss = "not logged" if loss is None else f"{loss:.4f}"
        print(f"{name:9s} final loss {loss}  ({record['elapsed_seconds']:.0f} s)")
    sft_accuracy, dpo_accuracy = sft_eval["results"]["exact_match"], dpo_eval["results"]["exact_match"]
    print(f"held-out exact match after SFT: {sft_accuracy:.1%} on {len(samples)} unseen question phrasings")
    if reward_accuracy:
        print(f"DPO reward accuracy: {reward_accuracy[0]:.0%} at the first logged steps -> "
              f"{reward_accuracy[-1]:.0%} at the last")  # fmt: skip
    print(f"held-out exact match after DPO: {dpo_accuracy:.1%}")
    dpo_scores = dpo_eval["results"]
    print(f"held-out BLEU-4 (chars) {dpo_scores['bleu4']:.3f}, ROUGE-L {dpo_scores['rouge_l']:.3f}, "
          f"ended with [EOS] {dpo_scores['ended_with_eos']:.0%}")  # fmt: skip
    ppl = results(out / "eval" / "ppl")["results"]
    print(f"held-out perplexity {ppl['perplexity']:.3f} ({ppl['bits_per_character']:.3f} bits/char)")
    if (out / "eval" / "ceval" / "results.json").is_file():
        ceval = results(out / "eval" / "ceval")["results"]
        accuracies = ", ".join(f"{m} {v['overall']['accuracy']:.1%}" for m, v in ceval["methods"].items())
        questions = next(iter(ceval["methods"].values()))["overall"]["questions"]
        print(f"C-Eval quick pass ({questions} questions, chance is 25%): {accuracies}")
    for sample in samples[:3]:
        print(f"  Q: {sample['prompt']}  A: {sample['answer']}  (reference: {sample['reference']})")
    print(f'HTTP API (sccl serve): POST /api/chat {{"input_txt": "{api_question}"}} -> {api_answer}')
    print(f"elapsed: {elapsed:.0f} s")
    print(f"outputs: {out} (each stage's recipe.yaml and results.json are in its folder)")
    print(f"report: {out / 'report.md'} (and report.html, with the loss plots)")
    sccl_path = Path(sys.executable).parent / "sccl"  # the command of this environment, activated or not
    print(f"next: {sccl_path} chat --model {out / 'dpo'}")
    print(f"  or: {sccl_path} serve --model {out / 'dpo'}   (then open http://127.0.0.1:8812/)")
    failures = demo_failures(sft_accuracy, dpo_accuracy, api_question, api_answer, api_sample["answer"])
    if failures:
        print("\ndemo check failed:\n" + "\n".join(f"- {f}" for f in failures), file=sys.stderr)
        raise SystemExit(1)
    print("demo checks passed: held-out exact match, DPO against SFT, the HTTP API's answer")
    return {
        "accuracy": dpo_accuracy,
        "sft_accuracy": sft_accuracy,
        "reward_accuracy": reward_accuracy,
        "elapsed": elapsed,
        "output_dir": str(out),
        "samples": samples,
    }
