"""The `data` stage's deduplication: precision against the planted truth, recall, and throughput against
ChatLM-mini-Chinese's dedup loop on the same rows and the same single core, plus the stage at scale.

    python benchmarks/bench_data_dedup.py [--rows 1000000] [--small 250000] [--compare-rows 10000]

Rows are built from the shared data (../shared/data or $SCCL_SHARED_DATA): its texts, repeats left out,
joined into one character stream (then the stream reversed, and its even and odd characters: rearrangements that
share no character 5-grams with the original), cut into consecutive prompt/response windows, so unplanted rows are
not near each other. Planted: 2% of rows are a copy of an earlier row with 1-3% of its characters substituted,
inserted or deleted, and 1% are exact copies, at known positions. Cleaning rewrites are off (rows must come out as
they went in, to be found).

- Precision is the planted truth's: of the rows removed, the share that belong to a planted pair. Rows removed that
  were not planted are reported apart: how many, and, for a sample of them, the exact character 5-gram Jaccard
  with their nearest kept row (every kept row sharing a 5-gram is compared: nothing approximate), so a reader can
  see whether they are near-duplicates the source data itself holds.
- Throughput: on the first `--compare-rows` rows, ChatLM's loop (datasketch MinHash, 256 permutations, one update
  per character, LSH 0.85; one process), a well-written datasketch loop (character 5-grams, 128 permutations,
  one update_batch per row, LSH 0.7) and the stage with `workers: 1`: the same rows on one core each. The stage's
  rows/s counts everything it does (read, clean, exact and near dedup, shuffle, split, report).
- At scale: the stage on `--small` and `--rows` rows with every core (`--workers`), for rows/s and peak RSS.
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
    return {
        "near_recall": caught(near) / len(near) if near else None,  # None: no planted pair in these rows
        "exact_recall": caught(exact) / len(exact) if exact else None,
        # the planted truth: only rows of planted pairs are duplicates
        "precision": removed_planted / removed_total if removed_total else 1.0,
        "removed": removed_total,
        "unplanted_removed": removed_total - removed_planted,
        "unplanted_judged": nearest_kept_jaccard(unplanted, list(survivors)),
    }


def nearest_kept_jaccard(removed: list, kept: list, sample: int = 50, seed: int = 0) -> dict:
    """For a sample of removed rows: the exact character 5-gram Jaccard with the nearest kept row. Every kept row
    that shares at least one 5-gram with a sampled row is compared (a row sharing none has Jaccard 0)."""
    if not removed:
        return {"checked": 0}
    chosen = random.Random(seed).sample(removed, min(sample, len(removed)))

    def grams(row):
        text = row[0] + row[1]
        return {text[i : i + 5] for i in range(max(1, len(text) - 4))}

    chosen_grams = [grams(row) for row in chosen]
    wanted = set().union(*chosen_grams)
    best = [0.0] * len(chosen)
    for row in kept:
        other = grams(row)
        if other.isdisjoint(wanted):
            continue
        for index, own in enumerate(chosen_grams):
            if row != chosen[index] and not own.isdisjoint(other):
                best[index] = max(best[index], len(own & other) / len(own | other))
    best.sort()
    return {"checked": len(chosen), "median": best[len(best) // 2], "share_at_least_0.5": sum(b >= 0.5 for b in best) / len(best),
            "min": best[0], "max": best[-1]}  # fmt: skip


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
    parser.add_argument("--compare-rows", type=int, default=10_000, help="rows for the one-core comparison")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--set", nargs="*", default=[], help="recipe keys for the stage, e.g. minhash_bands=32")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

    rows, near, exact = build_rows(args.rows)
    extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    result = {"rows": args.rows, "planted_near": len(near), "planted_exact": len(exact), "workers": args.workers}

    def planted(size):
        return [(a, b) for a, b in near if b < size], [(a, b) for a, b in exact if b < size]

    count = args.compare_rows
    part = rows[:count]
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("chatlm", "datasketch"):
            seconds, kept = baseline(part, mode)
            result[mode] = {
                "rows": count,
                "cores": 1,
                "rows_per_s": count / seconds,
                **scores(part, *planted(count), kept),
            }
            print(json.dumps({mode: result[mode]}), flush=True)
        run = run_stage(part, Path(tmp) / "compare", 1, extra)
        kept = run.pop("kept")
        result["stage_one_core"] = {"rows": count, "cores": 1, **run, **scores(part, *planted(count), kept)}
        print(json.dumps({"stage_one_core": result["stage_one_core"]}), flush=True)
        for size in [s for s in (args.small, args.rows) if s]:
            run = run_stage(rows[:size], Path(tmp) / f"run{size}", args.workers, extra)
            kept = run.pop("kept")
            result[f"stage_{size}"] = {"cores": args.workers, **run, **scores(rows[:size], *planted(size), kept)}
            print(json.dumps({f"stage_{size}": result[f"stage_{size}"]}), flush=True)
    one_core, stage = result["stage_one_core"], result[f"stage_{args.rows}"]
    result["ratio_vs_chatlm_same_rows_one_core"] = one_core["rows_per_s"] / result["chatlm"]["rows_per_s"]
    result["ratio_vs_datasketch_same_rows_one_core"] = one_core["rows_per_s"] / result["datasketch"]["rows_per_s"]
    print(json.dumps(result, indent=1))
    judged = stage["unplanted_judged"]
    print(
        f"| same {count:,} rows, one core each | stage {one_core['rows_per_s']:,.0f} rows/s | "
        f"x{result['ratio_vs_chatlm_same_rows_one_core']:.1f} ChatLM's loop ({result['chatlm']['rows_per_s']:,.0f}) | "
        f"x{result['ratio_vs_datasketch_same_rows_one_core']:.1f} datasketch loop "
        f"({result['datasketch']['rows_per_s']:,.0f}) | precision {one_core['precision']:.3f} (ChatLM's "
        f"{result['chatlm']['precision']:.3f}), recall {one_core['near_recall']:.3f} near |"
    )
    print(
        f"| {args.rows:,} rows, {args.workers} workers | {stage['rows_per_s']:,.0f} rows/s | precision (planted) "
        f"{stage['precision']:.3f}, recall {stage['near_recall']:.3f} near, {stage['exact_recall']:.3f} exact | "
        f"{stage['unplanted_removed']:,} unplanted rows removed; nearest kept row, exact 5-gram Jaccard on "
        f"{judged.get('checked', 0)} of them: median {judged.get('median', 0):.2f}, "
        f"{judged.get('share_at_least_0.5', 0):.0%} at 0.5 or more | peak RSS {stage['peak_rss_mb']:,.0f} MB "
        f"({args.small:,} rows: {result.get(f'stage_{args.small}', {}).get('peak_rss_mb', 0):,.0f} MB) |"
    )


if __name__ == "__main__":
    main()
