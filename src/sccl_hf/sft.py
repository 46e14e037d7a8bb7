"""Stage `sft`: supervised fine-tuning of a pretrained model directory on prompt/response parquet."""

import logging
import sys

from transformers import Seq2SeqTrainingArguments, set_seed

from sccl_hf.configs import DataArguments, ModelArguments, parse_recipe
from sccl_hf.data import load_seq2seq_splits
from sccl_hf.model import count_parameters, load_model, load_tokenizer
from sccl_hf.training import build_seq2seq_trainer, check_streaming, setup_logging, train_and_save

logger = logging.getLogger(__name__)

RECIPE_ARGUMENTS = (ModelArguments, DataArguments, Seq2SeqTrainingArguments)


def freeze_embeddings_and_encoder(model) -> None:
    """ChatLM-mini-Chinese's SFT: only the decoder learns (the tied embeddings stay as pretrained)."""
    for parameter in list(model.shared.parameters()) + list(model.encoder.parameters()):
        parameter.requires_grad = False


def main(model_args: ModelArguments, data_args: DataArguments, training_args: Seq2SeqTrainingArguments) -> dict:
    # 1. environment
    setup_logging(training_args)
    set_seed(training_args.seed)
    check_streaming(data_args, training_args)
    if not model_args.model_name_or_path:
        raise ValueError("sft: model_name_or_path must name a pretrained model directory")

    # 2. tokenizer and model
    tokenizer = load_tokenizer(model_args.tokenizer_dir or model_args.model_name_or_path)
    model = load_model(model_args.model_name_or_path)
    if model_args.freeze_embeddings_and_encoder:
        freeze_embeddings_and_encoder(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("model: %.1fM parameters, %.1fM trainable", count_parameters(model) / 1e6, trainable / 1e6)

    # 3. data
    train_dataset, eval_dataset = load_seq2seq_splits(data_args, tokenizer, seed=training_args.seed)

    # 4. train and save
    trainer = build_seq2seq_trainer(model, tokenizer, train_dataset, eval_dataset, training_args)
    return train_and_save(trainer, training_args, tokenizer)


if __name__ == "__main__":
    main(*parse_recipe(sys.argv[1], sys.argv[2:], RECIPE_ARGUMENTS))
