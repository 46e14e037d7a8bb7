"""Stage `pretrain`: text-to-text pretraining of a new model (a size preset) on prompt/response parquet."""

import logging
import sys

from transformers import Seq2SeqTrainingArguments, set_seed

from sccl_hf.configs import DataArguments, ModelArguments, parse_recipe
from sccl_hf.data import load_seq2seq_splits
from sccl_hf.model import build_config, count_parameters, load_model, load_tokenizer, new_model
from sccl_hf.training import build_seq2seq_trainer, check_streaming, setup_logging, train_and_save

logger = logging.getLogger(__name__)

RECIPE_ARGUMENTS = (ModelArguments, DataArguments, Seq2SeqTrainingArguments)


def main(model_args: ModelArguments, data_args: DataArguments, training_args: Seq2SeqTrainingArguments) -> dict:
    # 1. environment
    setup_logging(training_args)
    set_seed(training_args.seed)
    check_streaming(data_args, training_args)

    # 2. tokenizer and model: a new model from a preset, or continue pretraining a saved one
    tokenizer = load_tokenizer(model_args.tokenizer_dir or model_args.model_name_or_path)
    if model_args.model_name_or_path:
        model = load_model(model_args.model_name_or_path)
    else:
        config = build_config(
            model_args.preset, tokenizer, max_seq_len=data_args.max_seq_len, dropout_rate=model_args.dropout_rate
        )
        model = new_model(config)
    logger.info("model: %s, %.1fM parameters", model_args.preset, count_parameters(model) / 1e6)

    # 3. data
    train_dataset, eval_dataset = load_seq2seq_splits(data_args, tokenizer, seed=training_args.seed)

    # 4. train and save
    trainer = build_seq2seq_trainer(model, tokenizer, train_dataset, eval_dataset, training_args)
    return train_and_save(trainer, training_args, tokenizer)


if __name__ == "__main__":
    main(*parse_recipe(sys.argv[1], sys.argv[2:], RECIPE_ARGUMENTS))
