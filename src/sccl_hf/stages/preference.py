"""Stage `preference`: reference-free preference training (`loss: orpo | simpo | cpo`), full or LoRA.

Reads: a model directory (SFT, or for ORPO a pretrained one: its loss includes the SFT term), prompt/chosen/rejected
parquet or JSON lines, as `stage: dpo` does. Writes: a model directory (LoRA: the adapter, for `stage: merge_lora`),
checkpoints, the loss and reward log. No reference model: one model in memory where DPO holds two
(sccl_hf.seq2seq_preference says what TRL's trainers do and what is changed for T5).
"""

import logging

from sccl_hf.stages.dpo import DPOModelArguments, PreferenceDataArguments

# 1. arguments
RECIPE_ARGUMENTS = (DPOModelArguments, PreferenceDataArguments, "sccl_hf.seq2seq_preference:PreferenceConfig")


def main(model_args: DPOModelArguments, data_args: PreferenceDataArguments, training_args) -> dict:

    from transformers import set_seed

    from sccl_hf import model as models
    from sccl_hf.preference_runs import load_preference_inputs, preference_summary
    from sccl_hf.seq2seq_preference import trainer_class
    from sccl_hf.training import save_trained, setup_logging, train, training_callbacks

    setup_logging(training_args)
    set_seed(training_args.seed)

    # 2. inputs: the tokenizer, the model's sequence limit (unless the recipe sets one), the preference tables
    tokenizer, config, max_seq_len, train_dataset, eval_dataset = load_preference_inputs(model_args, data_args)
    training_args.max_completion_length = max_seq_len  # responses; prompts are cut by the trainer (max_seq_len)

    # 3. model: the policy only (the model object: TRL would load a path with AutoModelForCausalLM)
    model = models.load_model(model_args.model_name_or_path, config=config)
    peft_config = model_args.lora_config() if model_args.use_lora else None
    logging.getLogger(__name__).info(
        "model: %.1fM parameters; loss %s; LoRA: %s",
        models.count_parameters(model) / 1e6,
        training_args.loss,
        model_args.use_lora,
    )

    # 4. work
    callbacks = training_callbacks(training_args)
    training_args.include_num_input_tokens_seen = "no"  # TRL's batches hold prompt_input_ids, not input_ids
    trainer = trainer_class(training_args.loss)(
        model,
        args=training_args,
        processing_class=tokenizer,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=peft_config,
        callbacks=callbacks,
        max_seq_len=max_seq_len,
    )
    result = train(trainer, training_args)
    held_out = trainer.evaluate() if eval_dataset is not None else {}

    # 5. save (a LoRA run saves its adapter)
    results = save_trained(trainer, training_args, tokenizer, result)

    # 6. summary
    results = preference_summary(
        trainer, results, held_out, eval_dataset, ("rewards/", "logps/", "nll_loss", "log_odds")
    )
    return {**results, "loss": training_args.loss, "train_rows": len(train_dataset), "max_seq_len": max_seq_len}
