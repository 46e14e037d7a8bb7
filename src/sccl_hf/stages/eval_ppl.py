"""Stage `eval_ppl`: how well a model predicts the responses of a prompt/response table.

Reads: a model directory, prompt/response parquet or JSON lines. Writes: `results.md` in `output_dir`; the scores
go to `results.json`. Scores, over all response tokens (each response's closing [EOS] included), with the same
scoring code as DPO (`sccl_hf.scoring`): token-level loss (mean negative log-likelihood, nats), perplexity
(exp of the loss) and bits per character (total negative log-likelihood in bits over response characters, which
compares models with different tokenizers); and the rows, tokens and characters they cover.
"""

import math
from dataclasses import dataclass
from pathlib import Path

from sccl_hf.recipes import EvalTableArguments


# 1. arguments
@dataclass
class PerplexityEvalArguments(EvalTableArguments):
    batch_size: int = 16


RECIPE_ARGUMENTS = (PerplexityEvalArguments,)


def main(args: PerplexityEvalArguments) -> dict:

    from tqdm.auto import tqdm

    from sccl_hf.engine import pick_device
    from sccl_hf.metrics import markdown_table
    from sccl_hf.model import load_model, load_tokenizer
    from sccl_hf.scoring import score_responses
    from sccl_hf.tables import table_rows

    # 2. inputs
    rows = table_rows(args.eval_paths, max_rows=args.max_rows)
    # 3. model
    device, dtype = pick_device(args.device)
    model, tokenizer = (
        load_model(args.model_name_or_path, dtype=dtype).to(device),
        load_tokenizer(args.model_name_or_path),
    )
    # 4. work: batches of rows, with a progress bar
    scores = []
    for first in tqdm(range(0, len(rows), args.batch_size), desc="eval_ppl", unit="batch"):
        batch = rows[first : first + args.batch_size]
        prompts, responses = [r["prompt"] for r in batch], [r["response"] for r in batch]
        scores += score_responses(model, tokenizer, prompts, responses, batch_size=args.batch_size)
    nll = -sum(s.log_prob for s in scores)
    tokens, characters = sum(s.tokens for s in scores), sum(s.characters for s in scores)
    loss = nll / max(tokens, 1)
    results = {
        "loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_character": nll / math.log(2) / max(characters, 1),
        "rows": len(rows),
        "tokens": tokens,
        "characters": characters,
        "model": args.model_name_or_path,
    }
    # 5. save
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    table = markdown_table(
        ["rows", "tokens", "characters", "loss (nats/token)", "perplexity", "bits/char"],
        [[len(rows), tokens, characters, round(loss, 4), round(results["perplexity"], 3),
          round(results["bits_per_character"], 4)]],
    )  # fmt: skip
    title = f"# eval_ppl: {args.model_name_or_path}\n\non {', '.join(args.eval_files)}\n\n"
    (output / "results.md").write_text(title + table + "\n", encoding="utf-8")
    # 6. summary
    print(
        f"eval_ppl: loss {loss:.4f}, perplexity {results['perplexity']:.3f}, {results['bits_per_character']:.3f} "
        f"bits/char over {tokens} tokens of {len(rows)} rows ({args.model_name_or_path})"
    )
    return results
