"""Generation engines on this machine, in one run: `my_generate` (the baseline), plain `generate`, and
CTranslate2 at each quantization, greedy, batch 1 and batch 8, on the demo model and on a random-init 0.2B model;
peak memory of a loaded 0.2B model per engine; greedy agreement with the torch engine on the demo's held-out
questions.

    python benchmarks/bench_engines.py [--demo runs/demo/dpo] [--new-tokens 64] [--work runs/bench/engines]

Decoding is forced to `--new-tokens` tokens (a random model would stop at a random [EOS]). CTranslate2 runs with
its default settings (threads included) unless `--ct2-threads` says otherwise. Prints JSON, then markdown rows.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

VOCAB = 29_298  # ChatLM-mini-Chinese's vocabulary
QUANTIZATIONS = ("float32", "int8")


def chatlm_sized_tokenizer(folder: Path):
    """A tokenizer with ChatLM's vocabulary size: one token per CJK character, [PAD]=0, [EOS]=1, [UNK]=2 (the
    output projection's size is what matters for speed, not which characters they are)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from sccl_hf.tokenization import save_tokenizer, wrap

    special = ["[PAD]", "[EOS]", "[UNK]", "[SEP]", "[BOS]", "[CLS]", "[MASK]"]
    vocab = {token: i for i, token in enumerate(special)}
    vocab.update({chr(0x4E00 + i): i + len(special) for i in range(VOCAB - len(special))})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    save_tokenizer(wrap(tokenizer), folder)


def random_chatlm_model(work: Path) -> Path:
    import torch

    from sccl_hf.model import build_config, load_tokenizer, new_model, save_model_dir

    folder = work / "random-0.2b"
    if not (folder / "model.safetensors").is_file():
        chatlm_sized_tokenizer(folder)
        torch.manual_seed(0)
        tokenizer = load_tokenizer(folder)
        save_model_dir(new_model(build_config("chatlm-0.2b", tokenizer, max_seq_len=256)), tokenizer, folder)
    return folder


def exported(model: Path, quantization: str, work: Path) -> Path:
    from sccl_hf.stages.export_ct2 import ExportArguments, main

    folder = work / f"{model.name}-ct2-{quantization}"
    if not (folder / "model.bin").is_file():
        main(ExportArguments(model_dir=str(model), output_dir=str(folder), quantization=quantization))
    return folder


def prompts(tokenizer, batch: int) -> list[str]:
    import random

    rng = random.Random(0)
    return ["".join(chr(0x4E00 + rng.randrange(3000)) for _ in range(32)) for _ in range(batch)]


def tokens_per_second(engine_name: str, folder: Path, batch: int, new_tokens: int, threads: int) -> float:
    import torch

    from sccl_hf.engine import Engine, load_engine

    if engine_name == "ct2":
        engine = load_engine(folder, "cpu", "ct2", threads)
        texts = prompts(engine.tokenizer, batch)
        sources = [engine.source(t) for t in texts]

        def run():
            engine.translator.translate_batch(sources, beam_size=1, max_decoding_length=new_tokens,
                                              min_decoding_length=new_tokens)  # fmt: skip
    else:
        engine = Engine.load(folder, "cpu")
        texts = prompts(engine.tokenizer, batch)
        encoded = engine.tokenizer(texts, return_tensors="pt", padding=True)

        def run():
            with torch.no_grad():
                if engine_name == "my_generate":
                    engine.model.my_generate(encoded["input_ids"], encoded["attention_mask"], max_seq_len=new_tokens,
                                             search_type="greedy", min_new_tokens=new_tokens)  # fmt: skip
                else:  # plain generate
                    engine.model.generate(**encoded, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                          do_sample=False)  # fmt: skip

    run()  # warm-up
    times = []
    for _ in range(3):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return batch * new_tokens / min(times)


def peak_memory_mb(engine_name: str, folder: Path, threads: int) -> float:
    """Peak RSS (VmHWM: this process's own, unlike ru_maxrss, which a child inherits from its parent) of a fresh
    process that loads the engine and answers once; `none`: one that only imports."""
    code = f"""
from sccl_hf.engine import Engine, load_engine
if {engine_name!r} != "none":
    engine = load_engine({str(folder)!r}, "cpu", {engine_name!r}, {threads}) if {engine_name!r} == "ct2" else Engine.load({str(folder)!r}, "cpu")
    engine.generate(["浙江的省会是哪里？"], max_new_tokens=8)
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def agreement(demo: Path, work: Path, held_out: Path, threads: int) -> dict:
    import pyarrow.parquet as pq

    from sccl_hf.engine import Engine, load_engine

    questions = pq.read_table(held_out).column("prompt").to_pylist()
    reference = Engine.load(demo, "cpu").generate(questions)
    result = {"questions": len(questions)}
    for quantization in QUANTIZATIONS:
        answers = load_engine(exported(demo, quantization, work), "cpu", "ct2", threads).generate(questions)
        result[quantization] = sum(a == b for a, b in zip(answers, reference)) / len(questions)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", default="runs/demo/dpo")
    parser.add_argument("--held-out", default="runs/demo/data/held_out.parquet")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--ct2-threads", type=int, default=0, help="0: the engine's default (half the cores)")
    parser.add_argument("--work", default="runs/bench/engines")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    import torch

    models = {"random-0.2b": random_chatlm_model(work)}
    if Path(args.demo).is_dir():
        models = {"demo": Path(args.demo), **models}
    else:
        print(f"no demo model at {args.demo} (run `make demo` first): the 0.2B model only", file=sys.stderr)
    results = {"machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads)",
               "new_tokens": args.new_tokens, "ct2_threads": args.ct2_threads or "default", "speed": {}}  # fmt: skip
    rows = []
    for name, folder in models.items():
        for batch in (1, 8):
            speed = {}
            for engine_name in ("my_generate", "generate"):
                speed[engine_name] = tokens_per_second(engine_name, folder, batch, args.new_tokens, 0)
            for quantization in QUANTIZATIONS:
                ct2 = exported(folder, quantization, work)
                speed[f"ct2 {quantization}"] = tokens_per_second("ct2", ct2, batch, args.new_tokens, args.ct2_threads)
            results["speed"][f"{name} batch {batch}"] = {k: round(v, 1) for k, v in speed.items()}
            base = speed["my_generate"]
            rows.append(f"| {name}, batch {batch} | " + " | ".join(
                f"{v:.0f} (x{v / base:.2f})" for v in speed.values()) + " |")  # fmt: skip
    big = models["random-0.2b"]
    imports = peak_memory_mb("none", big, 0)
    memory = {"imports only": imports, "torch": peak_memory_mb("torch", big, 0)}
    for quantization in QUANTIZATIONS:
        memory[f"ct2 {quantization}"] = peak_memory_mb("ct2", exported(big, quantization, work), args.ct2_threads)
    results["peak_rss_mb_0.2b"] = {k: round(v) for k, v in memory.items()}
    if "demo" in models and Path(args.held_out).is_file():
        results["greedy_agreement_with_torch"] = agreement(models["demo"], work, Path(args.held_out), args.ct2_threads)
    print(json.dumps(results, indent=2))
    print("| model | my_generate | generate | ct2 float32 | ct2 int8 |  (decode tokens/s, ratio to my_generate)")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"peak RSS, 0.2B loaded and answering once (MB): {results['peak_rss_mb_0.2b']}")


if __name__ == "__main__":
    main()
