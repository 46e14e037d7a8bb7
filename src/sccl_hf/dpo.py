"""Stage `dpo`: preference optimisation of an SFT model on prompt/chosen/rejected data, full or LoRA.

Reference model: full training keeps a frozen copy (or `precompute_ref_log_probs: true` scores the data once
and keeps none); LoRA uses the same model with its adapter disabled, so there is no second copy in memory.
A LoRA run saves the adapter; `stage: merge_lora` turns it into a self-contained model directory.
"""

import copy
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from peft import LoraConfig, TaskType
from transformers import set_seed
from trl import DPOConfig

from sccl_hf.configs import DataFiles, parse_recipe
from sccl_hf.data import load_table
from sccl_hf.model import count_parameters, load_model, load_tokenizer
from sccl_hf.seq2seq_dpo import Seq2SeqDPOTrainer
from sccl_hf.training import setup_logging, train_and_save, training_callbacks

logger = logging.getLogger(__name__)


@dataclass
class DPOModelArguments:
    model_name_or_path: str = field(default="", metadata={"help": "the SFT model directory to start from"})
    use_lora: bool = field(default=False, metadata={"help": "train a LoRA adapter instead of every weight"})
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_target_modules: list[str] = field(default_factory=lambda: ["q", "v"], metadata={"help": "T5 module names"})
    lora_bias: str = field(default="all", metadata={"help": "none, all or lora_only (ChatLM-mini-Chinese: all)"})

    def __post_init__(self):
        if not self.model_name_or_path or not Path(self.model_name_or_path).is_dir():
            raise FileNotFoundError(f"model_name_or_path: no such model directory: '{self.model_name_or_path}'")

    def lora_config(self) -> LoraConfig:
        return LoraConfig(
            task_type=TaskType.SEQ_2_SEQ_LM,
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=self.lora_target_modules,
            bias=self.lora_bias,
        )


@dataclass
class PreferenceDataArguments(DataFiles):
    """Files with prompt, chosen and rejected columns (parquet or JSON lines)."""

    max_seq_len: int = field(default=256, metadata={"help": "truncate prompts and completions to this many tokens"})


RECIPE_ARGUMENTS = (DPOModelArguments, PreferenceDataArguments, DPOConfig)
PREFERENCE_COLUMNS = ["prompt", "chosen", "rejected"]


def main(model_args: DPOModelArguments, data_args: PreferenceDataArguments, training_args: DPOConfig) -> dict:
    # 1. environment
    setup_logging(training_args)
    set_seed(training_args.seed)

    # 2. tokenizer, policy and reference models
    tokenizer = load_tokenizer(model_args.model_name_or_path)
    model = load_model(model_args.model_name_or_path)
    peft_config = model_args.lora_config() if model_args.use_lora else None
    if peft_config is None and not training_args.precompute_ref_log_probs:
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    else:
        ref_model = None  # LoRA: the adapter is disabled for reference scores; or they are precomputed
    logger.info("model: %.1fM parameters; LoRA: %s", count_parameters(model) / 1e6, model_args.use_lora)

    # 3. data
    train_dataset = load_table(data_args.train_paths, PREFERENCE_COLUMNS)
    eval_dataset = load_table(data_args.eval_paths, PREFERENCE_COLUMNS) if data_args.eval_paths else None

    # 4. train and save (a LoRA run saves its adapter)
    trainer = Seq2SeqDPOTrainer(
        model,
        ref_model=ref_model,
        args=training_args,
        processing_class=tokenizer,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=peft_config,
        callbacks=training_callbacks(training_args),
        max_seq_len=data_args.max_seq_len,
    )
    return train_and_save(trainer, training_args, tokenizer)


if __name__ == "__main__":
    main(*parse_recipe(sys.argv[1], sys.argv[2:], RECIPE_ARGUMENTS))
