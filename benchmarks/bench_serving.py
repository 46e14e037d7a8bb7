"""`sccl serve` with 1, 4 and 8 concurrent streaming clients: aggregate tokens per second and time to first
token (p50, p95), with continuous batching (`--batch-size 16`, the default) and without it (`--batch-size 1`,
answers one at a time per worker: the baseline), in one run.

    python benchmarks/bench_serving.py [--preset small] [--max-tokens 48] [--requests 64]

The model is a random-init preset with the ie-duie tokenizer or, if that is absent, a generated one. Requests
sample (temperature 1, top_p 1): a random model's greedy answer is [PAD] after [PAD], which decodes to nothing,
while sampled answers are real tokens and rarely [EOS], so each runs to about `--max-tokens`. Every setting serves the same `--requests`
streaming requests, shared among its clients (each client sends its share one after another), so the 1-client
figure is measured over as much work as the 8-client one. The headline is batching against one at a time at the
same number of clients. Prints JSON, then markdown rows.
"""

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

PROMPTS = ["浙江的省会是哪里？", "请介绍一下长城。", "大的反义词是什么？", "写一首关于春天的诗。", "3加5等于多少？",
           "什么是机器学习？", "推荐一本好书。", "今天天气怎么样？"]  # fmt: skip


def model_folder(work: Path, preset: str) -> Path:
    import torch

    from sccl_hf.model import build_config, load_tokenizer, new_model, save_model_dir

    folder = work / f"random-{preset}"
    if not (folder / "model.safetensors").is_file():
        tokenizer_dir = Path("runs/ie-duie/tokenizer")
        if not tokenizer_dir.is_dir():
            from sccl_hf.demo_corpus import write_corpus
            from sccl_hf.stages.tokenizer import TokenizerArguments, main

            data = write_corpus(work / "corpus")
            tokenizer_dir = work / "tokenizer"
            main(TokenizerArguments(files=[str(data["pretrain"])], vocab_size=1056, output_dir=str(tokenizer_dir)))
        tokenizer = load_tokenizer(tokenizer_dir)
        torch.manual_seed(0)
        save_model_dir(new_model(build_config(preset, tokenizer, max_seq_len=128)), tokenizer, folder)
    return folder


def one_stream(url: str, prompt: str, max_tokens: int, tokenizer) -> tuple[float, int]:
    """(seconds to the first content, tokens answered) of one streaming request."""
    import httpx

    started, first, text = time.perf_counter(), None, ""
    body = {"messages": [{"role": "user", "content": prompt}], "stream": True, "max_tokens": max_tokens,
            "temperature": 1.0, "top_p": 1.0}  # fmt: skip
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            if delta and first is None:
                first = time.perf_counter() - started
            text += delta
    return first or (time.perf_counter() - started), len(tokenizer(text, add_special_tokens=False)["input_ids"])


def load(url: str, clients: int, requests: int, max_tokens: int, tokenizer) -> dict:
    firsts, tokens, lock = [], [0], threading.Lock()

    def client(index: int):
        for r in range(requests):
            first, count = one_stream(url, PROMPTS[(index + r) % len(PROMPTS)], max_tokens, tokenizer)
            with lock:
                firsts.append(first)
                tokens[0] += count

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    firsts.sort()
    return {
        "tokens_per_second": round(tokens[0] / seconds, 1),
        "ttft_p50_ms": round(1000 * statistics.median(firsts)),
        "ttft_p95_ms": round(1000 * firsts[min(len(firsts) - 1, int(0.95 * len(firsts)))]),
        "tokens": tokens[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--requests", type=int, default=64, help="requests per setting, shared among its clients")
    parser.add_argument("--work", default="runs/bench/serving")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    from sccl_hf.apps.serve import LocalServer
    from sccl_hf.model import load_tokenizer

    folder = model_folder(work, args.preset)
    tokenizer = load_tokenizer(folder)
    results = {"machine": f"{os.cpu_count()} CPU cores", "preset": args.preset, "max_tokens": args.max_tokens}
    for name, batch_size in (("one at a time", "1"), ("continuous batching", "16")):
        with LocalServer(folder, "--batch-size", batch_size) as server:
            one_stream(server.url, PROMPTS[0], 4, tokenizer)  # warm-up
            results[name] = {c: load(server.url, c, args.requests // c, args.max_tokens, tokenizer) for c in (1, 4, 8)}
    batched, single = results["continuous batching"], results["one at a time"]
    # the headline: batching against one at a time, at equal clients (the same requests on both sides)
    results["batching_vs_one_at_a_time"] = {
        c: round(batched[c]["tokens_per_second"] / single[c]["tokens_per_second"], 2) for c in batched
    }
    results["batching_8_clients_vs_1_client"] = round(
        batched[8]["tokens_per_second"] / batched[1]["tokens_per_second"], 2
    )
    print(json.dumps(results, indent=2))
    for name in ("one at a time", "continuous batching"):
        for clients, r in results[name].items():
            print(f"| {name} | {clients} clients | {r['tokens_per_second']} tokens/s | TTFT p50 {r['ttft_p50_ms']} ms, "
                  f"p95 {r['ttft_p95_ms']} ms |")  # fmt: skip
    ratios = results["batching_vs_one_at_a_time"]
    print(
        f"batching / one at a time, aggregate tokens/s: x{ratios[8]} at 8 clients, x{ratios[4]} at 4, x{ratios[1]} at 1 "
        f"(scaling with batching, 8 clients / 1 client: x{results['batching_8_clients_vs_1_client']})"
    )


if __name__ == "__main__":
    main()
