"""Does a fresh model learn to read its input with this optimizer? A pure copy task, as a quick probe.

The input is 12 random tokens out of 300 (then [EOS]); the target is the same 12 tokens (then [EOS]). A uniform guess
costs ln(300) = 5.7 per token. A T5 has no position term in its cross-attention, so copying arrives as a sudden
drop of the loss once the decoder learns where to look. Whether it arrives depends on the optimizer more than on
the rate (issue 31): with AdamW or the Trainer's absolute-rate Adafactor, a fresh `tiny` never learnt the span task
below; with relative-step, parameter-scaled Adafactor (`adafactor_t5`, the seed's and T5's) it did. Run it before
trusting a recipe's optimizer for a task that copies from the input (triple extraction does).

    python benchmarks/bench_copy_probe.py --preset tiny --task span --steps 2000     # the three optimizers below
    python benchmarks/bench_copy_probe.py [--preset small] [--optimizers adamw:1e-3 adamw:3e-4] [--task copy|span]
    python benchmarks/bench_copy_probe.py --preset tiny --optimizers adamw:1e-3 --task copy_then_span --steps 3500

`--optimizers`: each `NAME[:RATE]`, one probe each, from the same initial model and batches: `adamw:RATE` (torch's
AdamW, 50 warm-up steps, then constant), `adafactor:RATE` (the Trainer's `optim: adafactor`: transformers' Adafactor
with an absolute rate, no parameter scaling; same warm-up), `adafactor_t5` (no rate: min(1e-2, 1/sqrt(step)) times
each matrix's RMS; recipes say `optim: adafactor_t5`). Default: adamw:1e-3 adafactor:1e-3 adafactor_t5.

`--task span` is the form triple extraction needs: the input is 48 random tokens with a marker token before a
random place; the target is the 6 tokens after the marker (then [EOS]). Position cannot help; the model must find
the marker by content and read on from it. A model that reads the whole input as a bag of tokens reaches ln(48) =
3.9; one that reads nothing stays near ln(300) = 5.7 (4.9 once it has learnt where [EOS] goes: 6/7 of 5.7).
`--task copy_then_span --switch 1500`: the copy task first, then the span task, from the same model (issue 22: from
scratch, `tiny` never learnt the span task in 8,000 steps at 1e-3; after 1,500 copy steps it had it within 250).

Batch 32; no dropout; seed 0; denormal floats flushed to zero (relative steps make tiny second-moment factors,
which x86 CPUs compute far slower as denormals). Prints the loss (mean of the last 50 steps) every `--every` steps
for each optimizer, as JSON and a markdown row each; "copies" when the last loss is under 1.
"""

import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

SPECIAL = 10  # [PAD]=0, [EOS]=1 and room for the other special tokens: the copied tokens are 10..309
MARKER = 2  # the span task's marker: a special token, never one of the copied ones


def batch_of(task: str, batch: int, generator, length: int = 12, context: int = 48, span: int = 6):
    """(input ids, labels) of one batch; every row ends in [EOS]."""
    import torch

    eos = torch.ones(batch, 1, dtype=torch.long)
    if task == "copy":
        tokens = torch.randint(SPECIAL, SPECIAL + 300, (batch, length), generator=generator)
        ids = torch.cat([tokens, eos], dim=1)
        return ids, ids
    tokens = torch.randint(SPECIAL, SPECIAL + 300, (batch, context), generator=generator)
    starts = torch.randint(0, context - span, (batch,), generator=generator).tolist()
    marker = torch.tensor([MARKER])
    ids = torch.stack([torch.cat([row[:s], marker, row[s:]]) for row, s in zip(tokens, starts)])
    labels = torch.stack([row[s : s + span] for row, s in zip(tokens, starts)])
    return torch.cat([ids, eos], dim=1), torch.cat([labels, eos], dim=1)


def make_optimizer(spec: str, parameters):
    """(optimizer, schedule) for `NAME[:RATE]` (see the module's docstring)."""
    import torch
    from transformers.optimization import Adafactor

    from sccl_hf.optim import ADAFACTOR_T5, ADAFACTOR_T5_KWARGS, RelativeStepSchedule

    name, _, rate = spec.partition(":")
    if name == ADAFACTOR_T5:
        optimizer = Adafactor(parameters, **ADAFACTOR_T5_KWARGS)
        return optimizer, RelativeStepSchedule(optimizer)
    if name == "adamw":
        optimizer = torch.optim.AdamW(parameters, lr=float(rate))
    elif name == "adafactor":  # what the Trainer builds for `optim: adafactor`
        optimizer = Adafactor(parameters, lr=float(rate), scale_parameter=False, relative_step=False)
    else:
        raise SystemExit(f"unknown optimizer {spec!r}: adamw:RATE, adafactor:RATE or adafactor_t5")
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 50))


def probe(preset: str, optimizer_spec: str, steps: int, every: int, task: str = "copy", switch: int = 1500,
          batch: int = 32) -> dict:  # fmt: skip
    import torch

    from configuration_chat_model import TextToTextModelConfig
    from sccl_hf.model import PRESETS, new_model

    torch.manual_seed(0)
    config = TextToTextModelConfig(vocab_size=SPECIAL + 300, max_seq_len=64, dropout_rate=0.0, **PRESETS[preset])
    model = new_model(config).train()
    optimizer, schedule = make_optimizer(optimizer_spec, model.parameters())
    generator = torch.Generator().manual_seed(1)
    losses, curve, started = [], [], time.perf_counter()
    for step in range(1, steps + 1):
        step_task = task if task != "copy_then_span" else ("copy" if step <= switch else "span")
        ids, labels = batch_of(step_task, batch, generator)
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if step % every == 0:
            curve.append((step, round(sum(losses[-50:]) / len(losses[-50:]), 2)))
            print(f"{preset} {optimizer_spec} {task}: step {step}, loss {curve[-1][1]}", file=sys.stderr, flush=True)
    return {"task": task, "preset": preset, "optimizer": optimizer_spec, "curve": curve, "copies": curve[-1][1] < 1.0,
            "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--optimizers", nargs="+", default=["adamw:1e-3", "adafactor:1e-3", "adafactor_t5"])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--task", choices=("copy", "span", "copy_then_span"), default="copy")
    parser.add_argument("--switch", type=int, default=1500, help="copy_then_span: the last copy step")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    import torch

    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = [probe(args.preset, spec, args.steps, args.every, args.task, args.switch) for spec in args.optimizers]
    print(json.dumps({"uniform_loss": round(math.log(300), 2), "probes": results}, indent=2))
    for r in results:
        losses = ", ".join(f"{loss}" for _, loss in r["curve"])
        verdict = "copies" if r["copies"] else "does not copy yet"
        print(
            f"| {r['task']} probe, {r['preset']}, {r['optimizer']} | loss every {args.every} steps: {losses} | "
            f"{verdict} | {r['seconds']} s |"
        )


if __name__ == "__main__":
    main()
