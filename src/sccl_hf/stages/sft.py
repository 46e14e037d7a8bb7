"""Stage `sft`: supervised fine-tuning of a pretrained model directory on prompt/response tables.

Reads: a saved model directory, prompt/response parquet or JSON lines. Writes: a self-contained model directory,
checkpoints, the loss log (and `epoch-N` model folders with `save_each_epoch: true`). `max_seq_len` defaults to the model's own.
"""

import logging

from sccl_hf.recipes import DataArguments, ModelArguments

# 1. arguments
RECIPE_ARGUMENTS = (ModelArguments, DataArguments, "sccl_hf.optim:Seq2SeqArguments")


def freeze_embeddings_and_encoder(model) -> None:
    """ChatLM-mini-Chinese's SFT: only the decoder learns (the tied embeddings stay as pretrained)."""
    for parameter in list(model.shared.parameters()) + list(model.encoder.parameters()):
        parameter.requires_grad = False


def main(model_args: ModelArguments, data_args: DataArguments, training_args) -> dict:

    from transformers import set_seed

    from sccl_hf import model as models
    from sccl_hf.tables import load_seq2seq_splits
    from sccl_hf.training import build_seq2seq_trainer, check_streaming, save_trained, setup_logging, train

    setup_logging(training_args)
    set_seed(training_args.seed)
    check_streaming(data_args, training_args)
    if not model_args.model_name_or_path:
        raise ValueError("sft: model_name_or_path must name a pretrained model directory")

    # 2. inputs: the tokenizer, the model's sequence limit (unless the recipe sets one), the tables
    tokenizer = models.load_tokenizer(model_args.tokenizer_dir or model_args.model_name_or_path)
    config = models.load_config(model_args.model_name_or_path)
    max_seq_len = models.training_max_len(config, data_args.max_seq_len)
    train_dataset, eval_dataset = load_seq2seq_splits(data_args, tokenizer, max_seq_len, training_args)

    # 3. model
    model = models.load_model(model_args.model_name_or_path, config=config)
    if model_args.freeze_embeddings_and_encoder:
        freeze_embeddings_and_encoder(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logging.getLogger(__name__).info(
        "model: %.1fM parameters, %.1fM trainable", models.count_parameters(model) / 1e6, trainable / 1e6
    )

    # 4. work
    trainer = build_seq2seq_trainer(
        model, tokenizer, train_dataset, eval_dataset, training_args, data_args, model_args.save_each_epoch,
        parent_dir=models.local_model_dir(model_args.model_name_or_path) if model_args.start_near_parent_loss else None,
    )  # fmt: skip
    result = train(trainer, training_args)

    # 5. save
    results = save_trained(trainer, training_args, tokenizer, result)

    # 6. summary
    return {**results, "trainable_parameters": trainable, "max_seq_len": max_seq_len}
