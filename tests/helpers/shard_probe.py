"""Run under `accelerate launch --multi_gpu --num_processes 2` (CPU processes when there is no GPU): record which prompts each process's train dataloader
yields when streaming, through the same dataset and trainer code the stages use."""

import json
import sys
from pathlib import Path

from transformers import Seq2SeqTrainingArguments

from sccl_hf.model import build_config, load_tokenizer, new_model
from sccl_hf.recipes import DataArguments
from sccl_hf.tables import load_seq2seq_dataset
from sccl_hf.training import build_seq2seq_trainer, check_streaming

data_file, tokenizer_dir, out_dir = sys.argv[1:4]
data_args = DataArguments(train_files=[data_file], streaming=True, buffer_size=16, max_seq_len=64)
training_args = Seq2SeqTrainingArguments(
    output_dir=out_dir, max_steps=1000, per_device_train_batch_size=4, report_to="none", use_cpu=True
)
check_streaming(data_args, training_args)
tokenizer = load_tokenizer(tokenizer_dir)
model = new_model(build_config("tiny", tokenizer))
dataset = load_seq2seq_dataset(data_args, data_args.train_paths, tokenizer, max_seq_len=64, seed=0)
trainer = build_seq2seq_trainer(model, tokenizer, dataset, None, training_args)
prompts = []
for batch in trainer.get_train_dataloader():
    for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
        prompts.append(tokenizer.decode(ids[mask.bool()], skip_special_tokens=True))
rank = training_args.process_index
Path(out_dir, f"rank{rank}.json").write_text(json.dumps(prompts, ensure_ascii=False))
