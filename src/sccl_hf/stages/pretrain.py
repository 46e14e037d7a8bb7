"""Stage `pretrain`: text-to-text pretraining of a new model (a size preset) on prompt/response tables.

Reads: prompt/response parquet or JSON lines (in memory, or streamed with `streaming: true`), a tokenizer
directory (or a saved model to continue). Writes: a self-contained model directory, checkpoints, the loss log.
"""

import logging

from sccl_hf.recipes import DataArguments, ModelArguments

# 1. arguments
RECIPE_ARGUMENTS = (ModelArguments, DataArguments, "sccl_hf.optim:Seq2SeqArguments")


def main(model_args: ModelArguments, data_args: DataArguments, training_args) -> dict:

    from transformers import set_seed

    from sccl_hf import model as models
    from sccl_hf.tables import load_seq2seq_splits
    from sccl_hf.training import build_seq2seq_trainer, check_streaming, save_trained, setup_logging, train

    setup_logging(training_args)
    set_seed(training_args.seed)
    check_streaming(data_args, training_args)

    # 2. inputs: the tokenizer, the sequence limit (a saved model's own, unless the recipe sets one), the tables
    tokenizer = models.load_tokenizer(model_args.tokenizer_dir or model_args.model_name_or_path)
    if model_args.model_name_or_path:
        config = models.load_config(model_args.model_name_or_path)
    else:
        config = models.build_config(model_args.preset, tokenizer, dropout_rate=model_args.dropout_rate)
    max_seq_len = models.training_max_len(config, data_args.max_seq_len)
    train_dataset, eval_dataset = load_seq2seq_splits(data_args, tokenizer, max_seq_len, training_args)

    # 3. model: a new model from the preset, or the saved one to continue
    if model_args.model_name_or_path:
        model = models.load_model(model_args.model_name_or_path, config=config)
    else:
        model = models.new_model(config)
    parameters = models.count_parameters(model)
    logging.getLogger(__name__).info("model: %.1fM parameters, max_seq_len %d", parameters / 1e6, max_seq_len)

    # 4. work
    continues = model_args.model_name_or_path and model_args.start_near_parent_loss
    parent = models.local_model_dir(model_args.model_name_or_path) if continues else None
    trainer = build_seq2seq_trainer(
        model, tokenizer, train_dataset, eval_dataset, training_args, data_args, model_args.save_each_epoch, parent
    )
    result = train(trainer, training_args)

    # 5. save
    results = save_trained(trainer, training_args, tokenizer, result)

    # 6. summary
    return {**results, "parameters": parameters, "max_seq_len": max_seq_len}
