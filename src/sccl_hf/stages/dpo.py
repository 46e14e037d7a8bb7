"""Stage `dpo`: preference optimisation of an SFT model on prompt/chosen/rejected data, full or LoRA.

Reads: the SFT model directory, prompt/chosen/rejected parquet or JSON lines. Writes: a model directory (LoRA:
the adapter; `stage: merge_lora` turns it into a model directory), checkpoints, the loss and reward log.
Reference model: full training keeps a frozen copy (or `precompute_ref_log_probs: true` scores the data once
and keeps none); LoRA uses the same model with its adapter disabled, so there is no second copy in memory.
"""

import copy
import logging
from dataclasses import dataclass, field

from sccl_hf.recipes import DataFiles


# 1. arguments
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
        from sccl_hf.model_folder import model_reference_problem

        if problem := model_reference_problem(self.model_name_or_path, "model_name_or_path"):
            raise FileNotFoundError(problem)

    def lora_config(self):
        from peft import LoraConfig, TaskType

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

    max_seq_len: int | None = field(
        default=None, metadata={"help": "truncate prompts and completions to this many tokens (default: the model's)"}
    )


RECIPE_ARGUMENTS = (DPOModelArguments, PreferenceDataArguments, "trl.trainer.dpo_config:DPOConfig")


def main(model_args: DPOModelArguments, data_args: PreferenceDataArguments, training_args) -> dict:

    from transformers import set_seed

    from sccl_hf import model as models
    from sccl_hf.preference_runs import load_preference_inputs, preference_summary
    from sccl_hf.seq2seq_dpo import Seq2SeqDPOTrainer
    from sccl_hf.training import save_trained, setup_logging, train, training_callbacks

    setup_logging(training_args)
    set_seed(training_args.seed)

    # 2. inputs: the tokenizer, the model's sequence limit (unless the recipe sets one), the preference tables
    tokenizer, config, max_seq_len, train_dataset, eval_dataset = load_preference_inputs(model_args, data_args)

    # 3. model: the policy, and the reference (a frozen copy; none for LoRA or precomputed log-probs)
    model = models.load_model(model_args.model_name_or_path, config=config)
    peft_config = model_args.lora_config() if model_args.use_lora else None
    if peft_config is None and not training_args.precompute_ref_log_probs:
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    else:
        ref_model = None
    logging.getLogger(__name__).info(
        "model: %.1fM parameters; LoRA: %s", models.count_parameters(model) / 1e6, model_args.use_lora
    )

    # 4. work
    trainer = Seq2SeqDPOTrainer(
        model,
        ref_model=ref_model,
        args=training_args,
        processing_class=tokenizer,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=peft_config,
        callbacks=training_callbacks(training_args),
        max_seq_len=max_seq_len,
    )
    result = train(trainer, training_args)
    # the held-out pairs, scored by the final model: does it prefer the chosen answers it did not train on?
    held_out = trainer.evaluate() if eval_dataset is not None else {}

    # 5. save (a LoRA run saves its adapter)
    results = save_trained(trainer, training_args, tokenizer, result)

    # 6. summary
    results = preference_summary(trainer, results, held_out, eval_dataset)
    return {**results, "train_rows": len(train_dataset), "max_seq_len": max_seq_len}
