"""Peak memory and seconds per step of preference training on the 0.2B preset: DPO (policy + frozen reference copy)
against ORPO and SimPO (no reference model), each loss in its own process, the same rows and optimizer.

    python benchmarks/bench_preference_memory.py [--losses dpo orpo simpo] [--rows 2] [--tokens 128] [--steps 3]

Prints a markdown table: peak RSS and its ratio to the first loss's, median seconds per step and its ratio. The
model is the `chatlm-0.2b` preset with its 29,298-token vocabulary, randomly initialised, fp32, AdamW, on the CPU
(or `--device cuda`: then peak GPU memory). The text comes from the demo corpus, tokenized with a small demo
tokenizer; prompts and answers are cut to `--tokens` tokens.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def child(loss: str, rows: int, tokens: int, steps: int, device: str) -> dict:
    import copy

    import datasets
    import pyarrow.parquet as pq
    import torch
    from transformers import TrainerCallback
    from trl import DPOConfig

    from configuration_chat_model import TextToTextModelConfig
    from sccl_hf.demo_corpus import write_corpus
    from sccl_hf.model import PRESETS, load_tokenizer, new_model
    from sccl_hf.seq2seq_dpo import Seq2SeqDPOTrainer
    from sccl_hf.seq2seq_preference import PreferenceConfig, trainer_class
    from sccl_hf.stages.tokenizer import TokenizerArguments
    from sccl_hf.stages.tokenizer import main as train_tokenizer

    torch.manual_seed(0)
    tmp = tempfile.mkdtemp()
    data = write_corpus(Path(tmp) / "data")
    train_tokenizer(TokenizerArguments(files=[str(data["sft"])], vocab_size=600, output_dir=f"{tmp}/tok"))
    tokenizer = load_tokenizer(f"{tmp}/tok")
    config = TextToTextModelConfig(vocab_size=29298, max_seq_len=tokens, pad_token_id=0, eos_token_id=1,
                                   decoder_start_token_id=0, **PRESETS["chatlm-0.2b"])  # fmt: skip
    model = new_model(config).to(device)
    text = "".join(pq.read_table(data["sft"]).column("prompt").to_pylist())
    pairs = [{"prompt": text[k * 50 :][: tokens], "chosen": text[k * 70 :][: tokens], "rejected": text[k * 90 :][: tokens]}
             for k in range(rows * (steps + 1))]  # fmt: skip
    common = dict(output_dir=f"{tmp}/out", per_device_train_batch_size=rows, max_steps=steps + 1, logging_steps=1,
                  save_strategy="no", report_to="none", use_cpu=device == "cpu", bf16=False, disable_tqdm=True)  # fmt: skip
    if loss == "dpo":
        args = DPOConfig(**common, beta=0.1)
        trainer = Seq2SeqDPOTrainer(model, ref_model=copy.deepcopy(model).eval().requires_grad_(False), args=args,
                                    processing_class=tokenizer, train_dataset=datasets.Dataset.from_list(pairs),
                                    max_seq_len=tokens)  # fmt: skip
    else:
        args = PreferenceConfig(**common, loss=loss, max_completion_length=tokens)
        trainer = trainer_class(loss)(model, args=args, processing_class=tokenizer,
                                      train_dataset=datasets.Dataset.from_list(pairs), max_seq_len=tokens)  # fmt: skip

    class StepTimes(TrainerCallback):
        times: list[float] = []

        def on_step_begin(self, *_, **__):
            self.started = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.times.append(time.perf_counter() - self.started)

    timer = StepTimes()
    trainer.add_callback(timer)
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device != "cpu"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # fmt: skip
    return {"loss": loss, "peak_mb": peak, "seconds_per_step": statistics.median(timer.times[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--losses", nargs="+", default=["dpo", "orpo", "simpo"])
    parser.add_argument("--rows", type=int, default=2, help="preference pairs per step")
    parser.add_argument("--tokens", type=int, default=128, help="prompt and answer length")
    parser.add_argument("--steps", type=int, default=3, help="steps timed (after one warm-up step)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.rows, args.tokens, args.steps, args.device)))
        return
    rows = []
    for loss in args.losses:  # one process each: a peak RSS is a process's
        command = [sys.executable, __file__, "--child", loss, "--rows", str(args.rows), "--tokens", str(args.tokens),
                   "--steps", str(args.steps), "--device", args.device]  # fmt: skip
        output = subprocess.run(command, capture_output=True, text=True, check=False)
        result = next((line for line in output.stdout.splitlines() if line.startswith("RESULT ")), None)
        if result is None:
            sys.exit(f"{loss} failed:\n{output.stderr[-3000:]}")
        rows.append(json.loads(result[len("RESULT ") :]))
        print(f"{loss}: {rows[-1]}", file=sys.stderr, flush=True)
    base = rows[0]
    memory = "peak GPU memory" if args.device != "cpu" else "peak RSS"
    print(f"\n0.2B preset, {args.rows} pairs x ({args.tokens} + {args.tokens}) tokens, fp32, AdamW, {args.device}\n")
    print(f"| loss | {memory} (MB) | x {base['loss']} | s/step | x {base['loss']} |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['loss']} | {row['peak_mb']:,.0f} | {row['peak_mb'] / base['peak_mb']:.2f} | "
              f"{row['seconds_per_step']:.2f} | {row['seconds_per_step'] / base['seconds_per_step']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
