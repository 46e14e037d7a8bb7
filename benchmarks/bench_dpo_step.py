"""One DPO training step against one SFT training step, same tiny model, same batch, measured in one run.

    python benchmarks/bench_dpo_step.py [--preset tiny] [--steps 30]

A DPO step runs the policy on chosen and rejected (2x the rows) plus a reference forward without gradients, so
a ratio near 2-3x is expected; with precomputed reference log-probs the reference forward goes away.
"""

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import datasets
import torch
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments
from trl import DPOConfig

from sccl_hf.demo_corpus import build_corpus, write_corpus
from sccl_hf.model import build_config, load_tokenizer, new_model
from sccl_hf.seq2seq_dpo import Seq2SeqDPOTrainer
from sccl_hf.stages.tokenizer import TokenizerArguments
from sccl_hf.stages.tokenizer import main as train_tokenizer


def median_step_seconds(trainer, batch, steps: int) -> float:
    trainer.create_optimizer_and_scheduler(num_training_steps=steps + 5)
    trainer.current_gradient_accumulation_steps = 1  # set by train(); we call training_step directly
    trainer.model.train()
    times = []
    for _ in range(steps + 3):
        start = time.perf_counter()
        trainer.training_step(trainer.model, batch)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return statistics.median(times[3:])  # the first steps warm up


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        data = write_corpus(Path(tmp) / "data")
        train_tokenizer(TokenizerArguments(files=[str(data["sft"])], vocab_size=600, output_dir=f"{tmp}/tok"))
        tokenizer = load_tokenizer(f"{tmp}/tok")
        model = new_model(build_config(args.preset, tokenizer, max_seq_len=32))
        pairs = build_corpus()["dpo"][: args.batch]

        sft_rows = datasets.Dataset.from_list([{"prompt": p["prompt"], "response": p["chosen"]} for p in pairs])
        sft_rows = sft_rows.map(
            lambda r: {
                "input_ids": tokenizer(r["prompt"])["input_ids"],
                "labels": tokenizer(r["response"])["input_ids"],
            },
            remove_columns=["prompt", "response"],
        )
        sft_args = Seq2SeqTrainingArguments(f"{tmp}/sft", report_to="none", use_cpu=True, learning_rate=1e-4)
        sft = Seq2SeqTrainer(
            model=copy.deepcopy(model),
            args=sft_args,
            train_dataset=sft_rows,
            data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
        )
        sft_batch = sft.data_collator([sft_rows[i] for i in range(len(sft_rows))])
        sft_seconds = median_step_seconds(sft, sft_batch, args.steps)

        results = {}
        for precompute in (False, True):
            dpo_args = DPOConfig(
                f"{tmp}/dpo",
                report_to="none",
                use_cpu=True,
                bf16=False,
                learning_rate=1e-4,
                precompute_ref_log_probs=precompute,
                per_device_train_batch_size=args.batch,
            )
            policy = copy.deepcopy(model)
            dpo = Seq2SeqDPOTrainer(
                policy,
                ref_model=None if precompute else copy.deepcopy(model),
                args=dpo_args,
                processing_class=tokenizer,
                train_dataset=datasets.Dataset.from_list(pairs),
                max_seq_len=32,
            )
            dpo_batch = dpo.data_collator([dpo.train_dataset[i] for i in range(len(pairs))])
            results[precompute] = median_step_seconds(dpo, dpo_batch, args.steps)

    print(f"{args.preset} model, batch of {args.batch} prompts, median of {args.steps} steps")
    print(f"SFT step: {sft_seconds * 1000:.1f} ms (baseline)")
    print(f"DPO step, frozen reference copy: {results[False] * 1000:.1f} ms  ratio {results[False] / sft_seconds:.2f}")
    print(f"DPO step, precomputed reference: {results[True] * 1000:.1f} ms  ratio {results[True] / sft_seconds:.2f}")


if __name__ == "__main__":
    main()
