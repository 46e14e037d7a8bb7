"""`sccl serve` with 1, 4, 8 and 16 concurrent streaming clients, on the torch engine and on CTranslate2 (int8 on
CPU): aggregate tokens per second and time to first token (p50, p95), batched (`--batch-size 16`, the default:
continuous batching on torch, CTranslate2 batches in 2 lanes on ct2), one at a time (`--batch-size 1 --workers 1`,
the baseline) and unbatched with 2 workers, in one run, with the server's peak memory (`MODES` below).

    python benchmarks/bench_serving.py [--preset small] [--max-tokens 48] [--requests 64] [--engines torch ct2]
    python benchmarks/bench_serving.py --preset chatlm-0.2b --requests 16 --max-tokens 32

The model is a random-init preset with the ie-duie tokenizer or, if that is absent, a generated one; `--engine
ct2` converts it into its `.ct2/int8` cache on first use. Requests sample (temperature 1, top_p 1): a random
model's greedy answer is [PAD] after [PAD], which decodes to nothing, while sampled answers are real tokens and
rarely [EOS], so each runs to about `--max-tokens`. Every setting serves the same `--requests` streaming requests,
shared among its clients (each client sends its share one after another), so the 1-client figure is measured over
as much work as the 16-client one. Prints JSON, then markdown rows and the ratios issue 23 asks for.
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


# Server settings per engine. "one at a time": one request decoded at a time (the issue's baseline); "2 workers,
# unbatched": two requests decoded at once, each alone (the server's default without batching on 2 cores);
# "batched": the default (`--batch-size 16`; on ct2, `--workers` 2 lanes of batches); ct2 "batched, 1 lane": one
# batch at a time.
MODES = {
    "torch": {
        "one at a time": ["--batch-size", "1", "--workers", "1"],
        "2 workers, unbatched": ["--batch-size", "1", "--workers", "2"],
        "batched": ["--batch-size", "16"],
    },
    "ct2": {
        "one at a time": ["--batch-size", "1", "--workers", "1"],
        "2 workers, unbatched": ["--batch-size", "1", "--workers", "2"],
        "batched, 1 lane": ["--batch-size", "16", "--workers", "1"],
        "batched": ["--batch-size", "16", "--workers", "2"],
    },
}


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


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--requests", type=int, default=64, help="requests per setting, shared among its clients")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--engines", nargs="+", default=["torch", "ct2"], choices=["torch", "ct2"])
    parser.add_argument("--work", default="runs/bench/serving")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    from sccl_hf.apps.serve import LocalServer
    from sccl_hf.model import load_tokenizer

    folder = model_folder(work, args.preset)
    tokenizer = load_tokenizer(folder)
    results = {"machine": f"{os.cpu_count()} CPU cores", "preset": args.preset, "max_tokens": args.max_tokens,
               "requests": args.requests}  # fmt: skip
    for engine in args.engines:
        for mode, flags in MODES[engine].items():
            with LocalServer(folder, "--engine", engine, *flags, timeout=600) as server:
                one_stream(server.url, PROMPTS[0], 4, tokenizer)  # warm-up
                runs = {c: load(server.url, c, max(1, args.requests // c), args.max_tokens, tokenizer)
                        for c in args.clients}  # fmt: skip
                runs["peak_rss_mb"] = peak_rss_mb(server.process.pid)
            results[f"{engine} {mode}"] = runs
    print(json.dumps(results, indent=2))
    for name, runs in results.items():
        if isinstance(runs, dict):
            for clients in args.clients:
                r = runs[clients]
                print(f"| {name} | {clients} clients | {r['tokens_per_second']} tokens/s | TTFT p50 {r['ttft_p50_ms']} ms, "
                      f"p95 {r['ttft_p95_ms']} ms | peak RSS {runs['peak_rss_mb']} MB |")  # fmt: skip

    def rate(name, clients):
        return results[name][clients]["tokens_per_second"]

    for engine in args.engines:  # batched against one at a time, same engine, same clients, same requests
        for baseline in ("one at a time", "2 workers, unbatched"):
            ratios = {c: round(rate(f"{engine} batched", c) / rate(f"{engine} {baseline}", c), 2) for c in args.clients}
            print(
                f"{engine}: batched / {baseline}, aggregate tokens/s: "
                + ", ".join(f"x{r} at {c}" for c, r in ratios.items())
            )
    if set(args.engines) == {"torch", "ct2"} and 8 in args.clients:
        print(f"ct2 batched at 8 clients / torch one at a time at 8: x{rate('ct2 batched', 8) / rate('torch one at a time', 8):.2f}; "
              f"TTFT p95 at 8 clients: ct2 batched {results['ct2 batched'][8]['ttft_p95_ms']} ms, torch batched "
              f"{results['torch batched'][8]['ttft_p95_ms']} ms")  # fmt: skip


if __name__ == "__main__":
    main()
