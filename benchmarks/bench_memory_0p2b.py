"""Memory and time of one training step of the 0.2B preset at ChatLM-mini-Chinese's sequence length (320), fp32
and bf16, with and without gradient checkpointing, on the device at hand (CPU here; a GPU where one is lent).

    python benchmarks/bench_memory_0p2b.py [--batch-size 16] [--device auto] [--steps 2] [--optimizers adamw]
    python benchmarks/bench_memory_0p2b.py --device cpu --batch-size 2 --steps 3 --settings fp32 --optimizers adamw adafactor_t5

Each setting runs in a fresh process (peak memory is per process): a random-init `chatlm-0.2b` model
(vocabulary 29,298), AdamW or the seed's relative-step Adafactor (`--optimizers adafactor_t5`: one factored second
moment per matrix instead of AdamW's two full moments), prompts and responses of the full 320 tokens. On a CPU
denormal floats are flushed to zero (relative steps make tiny second-moment factors). Reported per setting: peak memory
(CUDA: max allocated; CPU: peak RSS minus the process's RSS before the model was built), seconds per step
(the mean over `--steps` after a warm-up step), and tokens per second. Prints JSON, then markdown rows.
"""

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import psutil, torch
from configuration_chat_model import TextToTextModelConfig
from modeling_chat_model import TextToTextModel
from sccl_hf.model import PRESETS
batch, length, steps, dtype, checkpointing, device, optimizer_name = sys.argv[1:]
batch, length, steps, checkpointing = int(batch), int(length), int(steps), checkpointing == "1"
if device == "auto":
    device = "cuda" if torch.cuda.is_available() else "cpu"
if device == "cpu":
    torch.set_flush_denormal(True)
before = psutil.Process().memory_info().rss
torch.manual_seed(0)
config = TextToTextModelConfig(vocab_size=29_298, max_seq_len=length, dropout_rate=0.0, **PRESETS["chatlm-0.2b"])
model = TextToTextModel(config).to(device).train()
if checkpointing:
    model.gradient_checkpointing_enable()
    model.config.use_cache = False
if optimizer_name == "adafactor_t5":
    from transformers.optimization import Adafactor
    from sccl_hf.optim import ADAFACTOR_T5_KWARGS
    optimizer = Adafactor(model.parameters(), **ADAFACTOR_T5_KWARGS)
else:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
ids = torch.randint(10, 29_298, (batch, length), device=device)
autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dtype == "bf16")
def step():
    with autocast:
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
step()
times = []
for _ in range(steps):
    started = time.perf_counter()
    step()
    times.append(time.perf_counter() - started)
if device == "cuda":
    peak = torch.cuda.max_memory_allocated() / 2**20
else:
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before) / 2**20
seconds = sum(times) / len(times)
print(json.dumps({"device": device, "peak_mb": round(peak), "seconds_per_step": round(seconds, 2),
                  "tokens_per_second": round(2 * batch * length / seconds, 1)}))
"""


SETTINGS = {"fp32": ("fp32", "0"), "fp32-checkpointing": ("fp32", "1"), "bf16": ("bf16", "0"),
            "bf16-checkpointing": ("bf16", "1")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)  # the README table's batch
    parser.add_argument("--length", type=int, default=320)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--optimizers",
        nargs="+",
        choices=("adamw", "adafactor_t5"),
        default=["adamw"],
        help="each setting with each; several: rows also give the ratio to the first",
    )
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    args = parser.parse_args()
    results = {}
    baselines = {}  # setting -> the first optimizer's result
    for setting in args.settings:
        dtype, checkpointing = SETTINGS[setting]
        for optimizer in args.optimizers:
            name = f"{dtype}{', gradient checkpointing' if checkpointing == '1' else ''}, {optimizer}"
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.batch_size), str(args.length),
                                  str(args.steps), dtype, checkpointing, args.device, optimizer],
                                 capture_output=True, text=True, timeout=3600)  # fmt: skip
            if out.returncode:
                results[name] = {"error": out.stderr.strip().splitlines()[-1]}
                continue
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
            base = baselines.setdefault(setting, results[name])
            if base is not results[name]:
                results[name]["peak_vs_first"] = round(results[name]["peak_mb"] / base["peak_mb"], 2)
                results[name]["speed_vs_first"] = round(base["seconds_per_step"] / results[name]["seconds_per_step"], 2)
    print(json.dumps({"batch_size": args.batch_size, "length": args.length, "results": results}, indent=2))
    for name, r in results.items():
        if "error" not in r:
            against = (
                f" | peak x{r['peak_vs_first']}, speed x{r['speed_vs_first']} of the first"
                if "peak_vs_first" in r
                else ""
            )
            print(f"| 0.2B, batch {args.batch_size} x {args.length}, {name} | {r['device']} | {r['peak_mb']:,} MB | "
                  f"{r['seconds_per_step']} s/step | {r['tokens_per_second']} tokens/s{against} |")  # fmt: skip


if __name__ == "__main__":
    main()
