"""The `data` stage on a million rows: rows/s, peak RSS, and recall/precision on planted near-duplicates, against
two single-process datasketch baselines measured in the same run.

    python benchmarks/bench_data_dedup.py [--rows 1000000] [--small 250000] [--baseline-rows 20000]

Rows are built from the shared data (../shared/data or $SCCL_SHARED_DATA): its texts, repeats left out,
joined into one character stream (then the stream reversed, and its even and odd characters: rearrangements that
share no character 5-grams with the original), cut into consecutive prompt/response windows, so unplanted rows are not near each other. Planted:
2% of rows are a copy of an earlier row with 1-3% of its characters substituted, inserted or deleted, and 1% are
exact copies, at known positions. Cleaning rewrites are off (rows must come out as they went in, to be found).

Baselines, on the first `--baseline-rows` rows (the ChatLM one on a quarter of them: it is slow):
  chatlm      ChatLM-mini-Chinese's way: datasketch MinHash, 256 permutations, one update per character, LSH 0.85
  datasketch  a well-written loop: character 5-grams, 128 permutations, one update_batch per row, LSH 0.7
The stage's rows/s counts everything it does (read, clean, exact and near dedup, shuffle, split, report).
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

SHARED = Path(os.environ.get("SCCL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TEXTS = [  # poem titles ("《…》元·关汉卿") repeat too much to make distinct rows
    ("pretrain/chinese_poetry_346k.parquet", ["response"]),
    ("sft/sft_mix_44k.parquet", ["prompt", "response"]),
    ("pretrain/sentiment_reviews_77k.parquet", ["text"]),
    ("pretrain/couplets_50k.parquet", ["prompt", "response"]),
    ("pretrain/plain_text_misc.parquet", ["text"]),
    ("medical/toyhom_neike_sample_7k.parquet", ["prompt", "response"]),
    ("pretrain/zhwiki_paragraphs_cmrc_drcd.parquet", ["response"]),
]


def character_stream() -> str:
    """The shared texts, each once: a text is left out when its start or its middle (20 characters) was seen
    before (reading-comprehension sets repeat one passage under many questions)."""
    seen, parts = set(), []
    for name, columns in TEXTS:
        table = pq.read_table(SHARED / name, columns=columns)
        for column in columns:
            for text in table.column(column).to_pylist():
                text = "".join((text or "").split())
                pieces = {text[:20], text[len(text) // 2 : len(text) // 2 + 20]}
                if text and not pieces & seen:
                    seen.update(pieces)
                    parts.append(text)
    stream = "".join(parts)
    # three rearrangements that share no character 5-grams with the original or each other
    return stream + stream[::-1] + stream[::2] + stream[1::2]


def perturb(text: str, rng: random.Random) -> str:
    chars = list(text)
    for _ in range(max(1, round(len(chars) * rng.uniform(0.01, 0.03)))):
        at = rng.randrange(len(chars))
        kind = rng.random()
        if kind < 0.6:
            chars[at] = chr(rng.randint(0x4E00, 0x9FA5))
        elif kind < 0.8:
            chars.insert(at, chr(rng.randint(0x4E00, 0x9FA5)))
        elif len(chars) > 2:
            del chars[at]
    return "".join(chars)


def build_rows(count: int, seed: int = 0) -> tuple[list[tuple[str, str]], list[tuple[int, int]], list[tuple[int, int]]]:
    """Rows, and the planted (original, copy) pairs: near and exact."""
    rng = random.Random(seed)
    stream = character_stream()
    rows, near, exact, at = [], [], [], 0
    for index in range(count):
        roll = rng.random()
        if index > 100 and roll < 0.02:
            source = rng.randrange(index // 2)
            while source in {c for _, c in near[-50:]}:
                source = rng.randrange(index // 2)
            prompt, response = rows[source]
            rows.append((perturb(prompt, rng), perturb(response, rng)))
            near.append((source, index))
            continue
        if index > 100 and roll < 0.03:
            source = rng.randrange(index // 2)
            rows.append(rows[source])
            exact.append((source, index))
            continue
        p, r = rng.randint(12, 30), rng.randint(40, 130)
        if at + p + r > len(stream):
            raise SystemExit(f"the shared texts make {index} rows, not {count}")
        rows.append((stream[at : at + p], stream[at + p : at + p + r]))
        at += p + r
    return rows, near, exact


def write_jsonl(rows, folder: Path, files: int = 16) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    per_file = -(-len(rows) // files)
    for f in range(files):
        with open(folder / f"part-{f:02d}.jsonl", "w", encoding="utf-8") as handle:
            for prompt, response in rows[f * per_file : (f + 1) * per_file]:
                handle.write(json.dumps({"prompt": prompt, "response": response}, ensure_ascii=False) + "\n")


def peak_tree_memory(process: subprocess.Popen, pss: bool = False) -> float:
    """Poll the process and its children until it exits; the highest total seen, in MB. RSS, or PSS (pages
    shared after fork counted once) when `pss`."""
    import psutil

    root, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_full_info().pss if pss else p.memory_info().rss for p in tree))
        except psutil.Error:
            pass
        time.sleep(0.5 if pss else 0.2)
    return peak / 2**20


def run_stage(rows, workdir: Path, workers: int, extra: dict) -> dict:
    raw = workdir / "raw"
    write_jsonl(rows, raw)
    off = {k: False for k in ("nfkc", "traditional_to_simplified", "strip_html", "strip_urls", "strip_control",
                              "chinese_punctuation", "collapse_punctuation", "drop_response_repeats_prompt")}  # fmt: skip
    recipe = {"stage": "data", "output_dir": str(workdir / "out"), "workers": workers, "valid_size": 0, "test_size": 0,
              "sources": [{"name": "bench", "format": "jsonl", "files": str(raw)}], **off, **extra}  # fmt: skip
    (workdir / "recipe.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True))
    sccl = Path(sys.executable).with_name("sccl")
    start = time.perf_counter()
    with open(workdir / "log.txt", "w") as log:
        process = subprocess.Popen(
            [str(sccl), "run", str(workdir / "recipe.yaml")], stdout=log, stderr=subprocess.STDOUT
        )
        peak = peak_tree_memory(process)
    seconds = time.perf_counter() - start
    if process.returncode:
        raise SystemExit(f"the data stage failed: see {workdir / 'log.txt'}")
    kept = [
        (r["prompt"], r["response"])
        for f in sorted((workdir / "out" / "train").glob("*.parquet"))
        for r in pq.read_table(f).to_pylist()
    ]
    return {"seconds": seconds, "rows_per_s": len(rows) / seconds, "peak_rss_mb": peak, "kept": kept}


def scores(rows, near, exact, kept: list) -> dict:
    from collections import Counter

    survivors = Counter(kept)
    planted_rows = {i for pair in near + exact for i in pair}
    removed = Counter(rows) - survivors  # how many copies of each text went
    removed_total = sum(removed.values())
    # a removed text counts as planted if any row with that text is in a planted pair
    text_rows = {}
    for index, row in enumerate(rows):
        text_rows.setdefault(row, []).append(index)
    removed_planted = sum(n for text, n in removed.items() if any(i in planted_rows for i in text_rows[text]))

    def caught(pairs):  # at most one of the two texts is left
        return sum(
            (survivors[rows[a]] if rows[a] == rows[b] else survivors[rows[a]] + survivors[rows[b]]) <= 1
            for a, b in pairs
        )

    unplanted = [text for text, n in removed.items() if not any(i in planted_rows for i in text_rows[text])]
    natural = natural_duplicate_share(rows, unplanted)
    removed_unplanted = removed_total - removed_planted
    return {
        "near_recall": caught(near) / len(near) if near else None,  # None: no planted pair in these rows
        "exact_recall": caught(exact) / len(exact) if exact else None,
        # strict: only planted rows count as duplicates
        "precision_vs_planted": removed_planted / removed_total if removed_total else 1.0,
        # the unplanted rows removed were checked (a sample): those with a 5-gram Jaccard of 0.5 or more to
        # another input row are duplicates the source data itself holds, not mistakes
        "unplanted_removed": removed_unplanted,
        "unplanted_checked": natural["checked"],
        "unplanted_similar_share": natural["share"],
        "precision": (removed_planted + removed_unplanted * natural["share"]) / removed_total if removed_total else 1.0,
        "removed": removed_total,
    }


def natural_duplicate_share(rows, texts, sample: int = 300, seed: int = 0) -> dict:
    """Of `texts` (removed, not planted), the share whose best 5-gram Jaccard with another row is 0.5 or more.
    Candidates: rows that hold one of the text's 8-character pieces (found by str.find in all rows joined)."""
    import bisect

    if not texts:
        return {"checked": 0, "share": 1.0}
    chosen = random.Random(seed).sample(texts, min(sample, len(texts)))
    joined_parts, starts, at = [], [], 0
    for prompt, response in rows:
        starts.append(at)
        joined_parts.append(prompt + response + "\u0000")
        at += len(prompt) + len(response) + 1
    joined = "".join(joined_parts)

    def grams(text):
        return {text[i : i + 5] for i in range(max(1, len(text) - 4))}

    similar = 0
    for prompt, response in chosen:
        text = prompt + response
        own, best = grams(text), 0.0
        for offset in range(0, max(1, len(text) - 8), max(1, len(text) // 6)):
            piece, found = text[offset : offset + 8], -1
            while (found := joined.find(piece, found + 1)) != -1:
                index = bisect.bisect_right(starts, found) - 1
                other = rows[index][0] + rows[index][1]
                if other != text:
                    other_grams = grams(other)
                    best = max(best, len(own & other_grams) / len(own | other_grams))
        similar += best >= 0.5
    return {"checked": len(chosen), "share": similar / len(chosen)}


def baseline(rows, mode: str) -> tuple[float, list]:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=0.85 if mode == "chatlm" else 0.7, num_perm=256 if mode == "chatlm" else 128)
    kept = []
    start = time.perf_counter()
    for index, (prompt, response) in enumerate(rows):
        text = prompt + response
        if mode == "chatlm":
            signature = MinHash(num_perm=256)
            for char in text:
                signature.update(char.encode("utf-8"))
        else:
            signature = MinHash(num_perm=128)
            signature.update_batch([text[i : i + 5].encode("utf-8") for i in range(max(1, len(text) - 4))])
        if lsh.query(signature):
            continue
        lsh.insert(str(index), signature)
        kept.append((prompt, response))
    return time.perf_counter() - start, kept


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=250_000, help="a second run, for peak RSS against input size")
    parser.add_argument("--baseline-rows", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--set", nargs="*", default=[], help="recipe keys for the stage, e.g. minhash_bands=32")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

    rows, near, exact = build_rows(args.rows)
    result = {"rows": args.rows, "planted_near": len(near), "planted_exact": len(exact), "workers": args.workers}
    subset = rows[: args.baseline_rows]
    sub_near = [(a, b) for a, b in near if b < len(subset)]
    sub_exact = [(a, b) for a, b in exact if b < len(subset)]
    for mode, count in (("chatlm", len(subset) // 4), ("datasketch", len(subset))):
        part = subset[:count]
        seconds, kept = baseline(part, mode)
        pairs = ([(a, b) for a, b in sub_near if b < count], [(a, b) for a, b in sub_exact if b < count])
        result[mode] = {"rows": count, "rows_per_s": count / seconds, **scores(part, *pairs, kept)}
        print(json.dumps({mode: result[mode]}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for size in [s for s in (args.small, args.rows) if s]:
            size_rows = rows[:size]
            extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
            run = run_stage(size_rows, Path(tmp) / f"run{size}", args.workers, extra)
            pairs = ([(a, b) for a, b in near if b < size], [(a, b) for a, b in exact if b < size])
            kept = run.pop("kept")
            result[f"stage_{size}"] = {**run, **scores(size_rows, *pairs, kept)}
            print(json.dumps({f"stage_{size}": result[f"stage_{size}"]}), flush=True)
    stage = result[f"stage_{args.rows}"]
    result["ratio_vs_chatlm"] = stage["rows_per_s"] / result["chatlm"]["rows_per_s"]
    result["ratio_vs_datasketch"] = stage["rows_per_s"] / result["datasketch"]["rows_per_s"]
    print(json.dumps(result, indent=1))
    print(
        f"| {args.rows:,} rows, {args.workers} workers | {stage['rows_per_s']:,.0f} rows/s | "
        f"x{result['ratio_vs_chatlm']:.1f} ChatLM ({result['chatlm']['rows_per_s']:,.0f}) | "
        f"x{result['ratio_vs_datasketch']:.1f} datasketch loop ({result['datasketch']['rows_per_s']:,.0f}) | "
        f"recall {stage['near_recall']:.3f} near, {stage['exact_recall']:.3f} exact | "
        f"precision {stage['precision']:.3f} ({stage['precision_vs_planted']:.3f} counting planted rows only) | "
        f"peak RSS {stage['peak_rss_mb']:,.0f} MB ({args.small:,} rows: "
        f"{result.get(f'stage_{args.small}', {}).get('peak_rss_mb', 0):,.0f} MB) |"
    )


if __name__ == "__main__":
    main()
