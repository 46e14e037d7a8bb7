"""Generation and serving speed on this machine, each figure beside a baseline measured in the same run.

    python benchmarks/bench_generation.py [--quick]

1. Memory bandwidth (a large tensor copy): the baseline for decoding.
2. Greedy decoding tokens/s at batch 1 and 8 for the `tiny` and `chatlm-0.2b` presets (random weights, ChatLM's
   vocabulary of 29,298), and for batch 1 the ratio to the memory-bandwidth bound: each new token reads the
   decoder's weights and the output embedding once, so tokens/s <= bandwidth / those bytes.
3. First-token latency when streaming (time from the call to the first generated token).
4. Requests/s of `sccl serve` at 8 concurrent clients, against the same requests answered in-process one after
   another (the cost and benefit of HTTP, threads and queuing).
"""

import argparse
import concurrent.futures
import statistics
import tempfile
import time
from pathlib import Path

import torch

from configuration_chat_model import TextToTextModelConfig  # noqa: E402
from modeling_chat_model import TextToTextModel  # noqa: E402
from sccl_hf.model import PRESETS, count_parameters  # noqa: E402

VOCAB = 29_298


def memory_bandwidth_gb_s(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes moved per second by a large copy (each byte read once and written once)."""
    source = torch.ones(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        target.copy_(source)
        times.append(time.perf_counter() - start)
    return 2 * source.numel() * 4 / min(times) / 1e9


def build(preset: str) -> TextToTextModel:
    torch.manual_seed(0)
    config = TextToTextModelConfig(vocab_size=VOCAB, max_seq_len=256, **PRESETS[preset])
    return TextToTextModel(config).eval()


def bytes_read_per_token(model: TextToTextModel) -> int:
    """Decoder weights plus the output projection (tied to the shared embedding), in bytes."""
    decoder = {id(p): p for p in model.decoder.parameters() if p is not model.shared.weight}
    return (sum(p.numel() for p in decoder.values()) + model.lm_head.weight.numel()) * 4


@torch.no_grad()
def decode_tokens_per_second(model, batch: int, new_tokens: int, repeats: int = 3) -> float:
    input_ids = torch.randint(10, VOCAB, (batch, 32))
    attention_mask = torch.ones_like(input_ids)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            num_beams=1,
        )
        elapsed = time.perf_counter() - start
        rates.append(batch * (output.shape[1] - 1) / elapsed)
    return statistics.median(rates)


class FirstTokenClock:
    """A streamer that records when the first generated token arrives (the first put is the decoder start)."""

    def __init__(self):
        self.puts, self.first = 0, None

    def put(self, value):
        self.puts += 1
        if self.puts == 2 and self.first is None:
            self.first = time.perf_counter()

    def end(self):
        pass


@torch.no_grad()
def first_token_latency_ms(model, repeats: int = 5) -> float:
    input_ids = torch.randint(10, VOCAB, (1, 32))
    latencies = []
    for _ in range(repeats):
        clock = FirstTokenClock()
        start = time.perf_counter()
        model.my_generate(input_ids, torch.ones_like(input_ids), max_seq_len=2, search_type="greedy", streamer=clock)
        latencies.append((clock.first - start) * 1000)
    return statistics.median(latencies)


def concurrent_streams(url: str, streams: int) -> int:
    """Open `streams` streaming completions at once; return how many finished with [DONE] and no error."""
    import httpx

    body = {
        "messages": [{"role": "user", "content": "浙江的省会是哪里？"}],
        "temperature": 0.8,
        "max_tokens": 32,
        "stream": True,
    }

    def one(_):
        try:
            with httpx.Client(timeout=300) as http, http.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                return r.status_code == 200 and any(line == "data: [DONE]" for line in r.iter_lines())
        except httpx.HTTPError:
            return False

    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        return sum(pool.map(one, range(streams)))


def serving_requests_per_second(requests: int, clients: int = 8, streams: int = 128) -> tuple[float, float, int]:
    """(server requests/s at `clients` concurrent clients, in-process requests/s one after another,
    streams that completed out of `streams` opened at once)."""
    import httpx

    from sccl_hf.apps.serve import LocalServer
    from sccl_hf.demo_corpus import write_corpus
    from sccl_hf.engine import Engine
    from sccl_hf.model import build_config, load_model, load_tokenizer, new_model, save_model_dir
    from sccl_hf.stages.tokenizer import TokenizerArguments
    from sccl_hf.stages.tokenizer import main as train_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        data = write_corpus(Path(tmp) / "data")
        train_tokenizer(TokenizerArguments(files=[str(data["sft"])], vocab_size=600, output_dir=f"{tmp}/tok"))
        tokenizer = load_tokenizer(f"{tmp}/tok")
        torch.manual_seed(0)
        model_dir = save_model_dir(new_model(build_config("tiny", tokenizer)), tokenizer, f"{tmp}/model")
        prompt, max_tokens = "浙江的省会是哪里？", 16
        # In-process baseline: the same greedy generation (same tokens), no HTTP, one after another.
        model = load_model(model_dir).eval()
        start = time.perf_counter()
        for _ in range(requests):
            Engine(model, tokenizer).stream(prompt, lambda text: None, max_new_tokens=max_tokens)
        in_process = requests / (time.perf_counter() - start)

        with LocalServer(model_dir) as server:
            url = server.url
            body = {"messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": max_tokens}

            def client(n):
                with httpx.Client(timeout=120) as http:
                    for _ in range(n):
                        assert http.post(f"{url}/v1/chat/completions", json=body).status_code == 200

            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                list(pool.map(client, [requests // clients] * clients))
            served = (requests // clients * clients) / (time.perf_counter() - start)
            completed_streams = concurrent_streams(url, streams)
    return served, in_process, completed_streams


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer tokens and requests")
    args = parser.parse_args()
    new_tokens = 16 if args.quick else 64
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bandwidth = memory_bandwidth_gb_s()
    print(f"memory bandwidth (copy): {bandwidth:.1f} GB/s")
    for preset in ("tiny", "chatlm-0.2b"):
        model = build(preset)
        per_token = bytes_read_per_token(model)
        bound = bandwidth * 1e9 / per_token
        rate1 = decode_tokens_per_second(model, 1, new_tokens)
        rate8 = decode_tokens_per_second(model, 8, new_tokens)
        print(f"\n{preset}: {count_parameters(model) / 1e6:.1f}M parameters, {per_token / 1e6:.1f} MB read per token")
        print(
            f"  greedy batch 1: {rate1:8.1f} tokens/s   bandwidth bound {bound:8.1f} tokens/s   ratio {rate1 / bound:.2f}"
        )
        print(f"  greedy batch 8: {rate8:8.1f} tokens/s   {rate8 / rate1:.1f}x batch 1")
        print(f"  first token when streaming: {first_token_latency_ms(model):.1f} ms")
    streams = 32 if args.quick else 128
    served, in_process, completed = serving_requests_per_second(32 if args.quick else 96, streams=streams)
    print(
        f"\nserver, 8 concurrent clients (tiny, 16 tokens): {served:.1f} requests/s; "
        f"in-process one by one: {in_process:.1f} requests/s; ratio {served / in_process:.2f}"
    )
    print(f"server, {streams} streams opened at once: {completed}/{streams} completed without error")


if __name__ == "__main__":
    main()
