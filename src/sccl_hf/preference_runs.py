"""What the two preference stages (`dpo`, `preference`) share: their inputs and the summary of their results."""

from sccl_hf import model as models
from sccl_hf.tables import load_table
from sccl_hf.tokenization import peak_rss_mb

PREFERENCE_COLUMNS = ["prompt", "chosen", "rejected"]


def load_preference_inputs(model_args, data_args):
    """(tokenizer, config, max_seq_len, train, eval or None): the model's tokenizer and config, its sequence limit
    (unless the recipe sets one), the prompt/chosen/rejected tables (bad rows left out and named)."""
    tokenizer = models.load_tokenizer(model_args.model_name_or_path)
    config = models.load_config(model_args.model_name_or_path)
    max_seq_len = models.training_max_len(config, data_args.max_seq_len)
    train_dataset = load_table(data_args.train_paths, PREFERENCE_COLUMNS)
    eval_dataset = load_table(data_args.eval_paths, PREFERENCE_COLUMNS) if data_args.eval_paths else None
    return tokenizer, config, max_seq_len, train_dataset, eval_dataset


def preference_summary(trainer, results: dict, held_out: dict, eval_dataset, prefixes=("rewards/", "logps/")) -> dict:
    """`results` with the last logged rewards, the process's peak resident memory (a reference model shows there)
    and, with held-out pairs, the final model's reward accuracy on them."""
    last = next((h for h in reversed(trainer.state.log_history) if "rewards/accuracies" in h), {})
    results = {**results, "last_logged_rewards": {k: v for k, v in last.items() if k.startswith(prefixes)}}
    results["peak_rss_mb"] = round(peak_rss_mb())
    if held_out:
        results["held_out_rows"] = len(eval_dataset)
        results["held_out_reward_accuracy"] = held_out.get("eval_rewards/accuracies")
        results["held_out_reward_margin"] = held_out.get("eval_rewards/margins")
    return results
