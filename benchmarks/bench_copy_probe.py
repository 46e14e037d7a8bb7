"""Does a fresh model learn to read its input at this learning rate? A pure copy task, as a quick probe.

The input is 12 random tokens out of 300 (then [EOS]); the target is the same 12 tokens (then [EOS]). A uniform guess
costs ln(300) = 5.7 per token. A T5 has no position term in its cross-attention, so copying arrives as a sudden
drop of the loss once the decoder learns where to look; too high a learning rate keeps it from ever arriving
(issue 22: `small` stuck at 3.5 for 1,500 steps at 1e-3, learning at 3e-4). Run it before trusting a recipe's rate
for a task that copies from the input (triple extraction does).

    python benchmarks/bench_copy_probe.py [--preset small] [--rates 1e-3 3e-4] [--steps 1500]

Batch 32, AdamW, 50 warm-up steps, then constant; no dropout; seed 0. Prints the loss (mean of the last 50 steps)
every `--every` steps for each rate, as JSON and a markdown row per rate; "copies" when the last loss is under 1.
"""

import argparse
import json
import math
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

SPECIAL = 10  # [PAD]=0, [EOS]=1 and room for the other special tokens: the copied tokens are 10..309


def probe(preset: str, rate: float, steps: int, every: int, batch: int = 32, length: int = 12) -> dict:
    import torch

    from configuration_chat_model import TextToTextModelConfig
    from sccl_hf.model import PRESETS, new_model

    torch.manual_seed(0)
    config = TextToTextModelConfig(
        vocab_size=SPECIAL + 300, max_seq_len=length + 1, dropout_rate=0.0, **PRESETS[preset]
    )
    model = new_model(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 50))
    generator = torch.Generator().manual_seed(1)
    eos = torch.ones(batch, 1, dtype=torch.long)
    losses, curve, started = [], [], time.perf_counter()
    for step in range(1, steps + 1):
        tokens = torch.randint(SPECIAL, SPECIAL + 300, (batch, length), generator=generator)
        ids = torch.cat([tokens, eos], dim=1)
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if step % every == 0:
            curve.append((step, round(sum(losses[-50:]) / len(losses[-50:]), 2)))
    return {"preset": preset, "rate": rate, "curve": curve, "copies": curve[-1][1] < 1.0,
            "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--rates", type=float, nargs="+", default=[1e-3, 3e-4])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--every", type=int, default=250)
    args = parser.parse_args()
    results = [probe(args.preset, rate, args.steps, args.every) for rate in args.rates]
    print(json.dumps({"uniform_loss": round(math.log(300), 2), "probes": results}, indent=2))
    for r in results:
        losses = ", ".join(f"{loss}" for _, loss in r["curve"])
        verdict = "copies" if r["copies"] else "does not copy yet"
        print(f"| copy probe, {r['preset']}, lr {r['rate']:g} | loss every {args.every} steps: {losses} | {verdict} |")


if __name__ == "__main__":
    main()
