"""The torch decoding path against its bound: a static decoder cache and `torch.compile`, for `my_generate` and
for the serving batching loop, on a random-init 0.2B, in one run (issue 23, item 3).

    python benchmarks/bench_torch_decode.py [--new-tokens 64] [--clients 8] [--demo runs/demo/dpo]

1. The fp32 bound of this machine, measured here: memory bandwidth (a large copy) / the bytes one new token reads
   (the decoder's weights and the output embedding); and what torch's own kernels make of those bytes: one
   vector-matrix product per weight, nothing else (the floor of a decoding step built from them).
2. `my_generate` greedy at batch 1, decoding forced to `--new-tokens`: the dynamic cache (today), a static cache
   (`cache_implementation="static"`), and a static cache with `torch.compile` (transformers' own compile path,
   `CompileConfig`, allowed on the CPU). Best of 3 after a warm-up run (which pays for compiling).
3. The serving batching loop (`batching.BatchedGenerator`, what `sccl serve` runs), `--clients` requests of
   `--new-tokens` at once: as today, and with its decoder step compiled (`torch.compile(dynamic=True)`: the batch
   and the cache grow).
4. Whether each variant's greedy answers equal today's on the demo's held-out questions (the first `--questions`),
   when a demo model exists (`make demo`).

The project adopts a variant only at >= 1.3x with identical answers. Prints JSON, then markdown rows.
"""

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402
from bench_generation import build, bytes_read_per_token, memory_bandwidth_gb_s  # noqa: E402
from transformers import CompileConfig  # noqa: E402


def compile_config() -> CompileConfig:
    # transformers compiles generate's decoding step only on accelerators unless told that the CPU is meant;
    # "reduce-overhead" means CUDA graphs, so the CPU gets inductor's default mode
    config = CompileConfig(mode="default", fullgraph=False)
    config._compile_all_devices = True
    return config


VARIANTS = {
    "dynamic cache (today)": {},
    "static cache": {"cache_implementation": "static"},
    "static cache + torch.compile": {"cache_implementation": "static", "compile_config": compile_config()},
}


def my_generate_rate(model, variant: dict, new_tokens: int) -> tuple[float, float]:
    """(tokens/s best of 3, seconds of the first, warm-up call)."""
    input_ids = torch.randint(10, model.config.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(input_ids)

    def run():
        started = time.perf_counter()
        output = model.my_generate(input_ids, mask, max_seq_len=new_tokens, search_type="greedy",
                                   min_new_tokens=new_tokens, **variant)  # fmt: skip
        assert output.shape[1] == new_tokens + 1
        return time.perf_counter() - started

    first = run()
    return new_tokens / min(run() for _ in range(3)), first


@torch.no_grad()
def weights_only_rate(model, repeats: int = 20) -> float:
    """Tokens/s if a new token cost nothing but one vector-matrix product per weight it reads (the decoder's linear
    layers and the output embedding, batch 1, fp32): the floor of any fp32 decoding step made of these kernels."""
    weights = [m.weight for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)] + [model.lm_head.weight]
    vectors = [torch.randn(1, w.shape[1]) for w in weights]
    for x, w in zip(vectors, weights):
        torch.nn.functional.linear(x, w)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for x, w in zip(vectors, weights):
            torch.nn.functional.linear(x, w)
        best = min(best, time.perf_counter() - started)
    return 1 / best


def batching_rate(model, tokenizer, clients: int, new_tokens: int, compiled: bool) -> tuple[float, list[str]]:
    """Aggregate tokens/s of `clients` requests answered together by the batching loop (best of 2 after a
    warm-up), and their answers."""
    from sccl_hf.batching import BatchedGenerator

    decoder_forward = model.decoder.forward
    if compiled:
        model.decoder.forward = torch.compile(decoder_forward, dynamic=True)
    generator = BatchedGenerator(model, tokenizer, max_len=256, max_batch=clients)
    prompts = [f"第{i}个问题：浙江的省会是哪里？" for i in range(clients)]
    try:

        def run():
            answers = [None] * clients

            def one(i):
                answers[i] = generator.submit(prompts[i], lambda text: None, new_tokens)

            threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds = time.perf_counter() - started
            return sum(a.completion_tokens for a in answers) / seconds, [a.text for a in answers]

        run()
        rates = [run() for _ in range(2)]
        return max(r for r, _ in rates), rates[0][1]
    finally:
        generator.close()
        model.decoder.forward = decoder_forward


def demo_agreement(demo: Path, held_out: Path, questions: int) -> dict:
    import pyarrow.parquet as pq

    from sccl_hf.model import load_model, load_tokenizer

    model, tokenizer = load_model(demo).eval(), load_tokenizer(demo)
    prompts = pq.read_table(held_out).column("prompt").to_pylist()[:questions]

    def answers(variant: dict) -> list[list[int]]:
        out = []
        for prompt in prompts:
            encoded = tokenizer(prompt, return_tensors="pt")
            ids = model.my_generate(encoded["input_ids"], encoded["attention_mask"], max_seq_len=64,
                                    search_type="greedy", **variant)  # fmt: skip
            out.append(ids[0].tolist())
        return out

    reference = answers({})
    result = {"questions": len(prompts)}
    for name, variant in list(VARIANTS.items())[1:]:
        result[name] = sum(a == b for a, b in zip(answers(variant), reference)) / len(prompts)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--demo", default="runs/demo/dpo")
    parser.add_argument("--held-out", default="runs/demo/data/held_out.parquet")
    parser.add_argument("--questions", type=int, default=40)
    args = parser.parse_args()
    from bench_engines import chatlm_sized_tokenizer

    from sccl_hf.model import load_tokenizer

    results = {"machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads)",
               "new_tokens": args.new_tokens}  # fmt: skip
    bandwidth = memory_bandwidth_gb_s()
    model = build("chatlm-0.2b")
    bound = bandwidth * 1e9 / bytes_read_per_token(model)
    results["fp32_bound_tokens_per_s"] = round(bound, 1)
    floor = weights_only_rate(model)
    results["weights_only_tokens_per_s"] = round(floor, 1)  # the same bytes, read by torch's own kernels
    print("weights only", round(floor, 1), file=sys.stderr, flush=True)
    batch1 = {}
    for name, variant in VARIANTS.items():
        with torch.no_grad():
            rate, first = my_generate_rate(model, variant, args.new_tokens)
        batch1[name] = {"tokens_per_s": round(rate, 1), "of_bound": round(rate / bound, 2),
                        "first_call_s": round(first, 1)}  # fmt: skip
        print(name, batch1[name], file=sys.stderr, flush=True)
    results["my_generate_batch_1"] = batch1
    tokenizer_dir = Path("runs/bench/torch-decode/tokenizer")
    if not (tokenizer_dir / "tokenizer.json").is_file():
        chatlm_sized_tokenizer(tokenizer_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    loop = {}
    answers = {}
    for compiled in (False, True):
        name = "batching loop, decoder compiled" if compiled else "batching loop (today)"
        rate, answers[compiled] = batching_rate(model, tokenizer, args.clients, args.new_tokens, compiled)
        loop[name] = round(rate, 1)
        print(name, loop[name], file=sys.stderr, flush=True)
    loop["same answers"] = answers[True] == answers[False]
    results[f"batching_loop_{args.clients}_clients_tokens_per_s"] = loop
    if Path(args.demo).is_dir() and Path(args.held_out).is_file():
        results["demo_greedy_agreement_with_today"] = demo_agreement(Path(args.demo), Path(args.held_out),
                                                                     args.questions)  # fmt: skip
    print(json.dumps(results, indent=2))
    base = batch1["dynamic cache (today)"]["tokens_per_s"]
    print(f"| variant (random 0.2B, greedy, {args.new_tokens} tokens) | tokens/s | ratio to today | of the fp32 bound "
          f"({bound:.1f} tokens/s) |")  # fmt: skip
    print("|---|---:|---:|---:|")
    for name, row in batch1.items():
        print(f"| my_generate batch 1, {name} | {row['tokens_per_s']} | x{row['tokens_per_s'] / base:.2f} | "
              f"{row['of_bound']} |")  # fmt: skip
    print(f"| torch's vector-matrix products alone, the same weights, batch 1 | {floor:.1f} | "
          f"x{floor / base:.2f} | {floor / bound:.2f} |")  # fmt: skip
    today = loop["batching loop (today)"]
    for name in ("batching loop (today)", "batching loop, decoder compiled"):
        print(f"| {name}, {args.clients} clients | {loop[name]} | x{loop[name] / today:.2f} | |")


if __name__ == "__main__":
    main()
