"""Stage `data`: raw files in every supported format -> cleaned, deduplicated train/valid/test parquet.

The fixtures below are small files written here, one per raw format, with planted faults (a malformed line, an
undecodable line, a missing field, duplicates). Most tests read one shared run (`workers: 1`: datatrove runs
its tasks in this process, which is quick for a few hundred rows); the resume, Ray and real-data tests run their own.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import ROOT, missing, run_sft
from sccl_hf.cleaning import CleaningArguments, drop_reason, rewrites, tidy
from sccl_hf.data_pipeline import CharacterTokenizer, character_shingles, lsh_threshold, split_counts
from sccl_hf.stages import run_recipe

FACTS = [
    ("长江是中国最长的河流吗？", "是的，长江全长约六千三百公里，是中国最长的河流。"),
    ("熊猫主要吃什么？", "大熊猫主要以竹子为食，每天要吃很多竹子。"),
    ("北京是哪个国家的首都？", "北京是中华人民共和国的首都，有三千多年的建城史。"),
    ("一年有几个季节？", "一年通常分为春夏秋冬四个季节，每个季节约三个月。"),
    ("水在零度会怎样？", "在标准大气压下，水在零摄氏度时会开始结冰。"),
    ("为什么要多喝水？", "多喝水可以帮助身体代谢，保持皮肤湿润，也有利于消化。"),
]


def unique_rows(count: int, seed: int) -> list[tuple[str, str]]:
    """Distinct Chinese rows (no two near each other): characters drawn at random from the CJK block."""
    import random

    rng = random.Random(seed)
    return [
        (
            "".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(12)) + "？",
            "".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(40)) + "。",
        )
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("raw")
    rows = unique_rows(120, seed=1)
    # JSON lines with a like count, a malformed line, a missing field, an exact and a near duplicate
    lines = [
        json.dumps({"title": q, "content": a, "star": i % 10}, ensure_ascii=False) for i, (q, a) in enumerate(rows[:60])
    ]
    lines.insert(5, '{"title": "坏行", "content": ')  # line 6: malformed JSON
    lines.append(json.dumps({"title": "没有回答的问题？", "star": 9}, ensure_ascii=False))  # missing field
    lines.append(json.dumps({"title": rows[2][0], "content": rows[2][1], "star": 9}, ensure_ascii=False))  # exact
    q, a = rows[1]
    near = a[:20] + ("乙" if a[20] != "乙" else "甲") + a[21:]  # one character of 41 changed
    lines.append(json.dumps({"title": q, "content": near, "star": 9}, ensure_ascii=False))
    (folder / "webtext.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # a JSON array, Alpaca style
    alpaca = [{"instruction": q, "input": "", "output": a} for q, a in FACTS[:3]]
    alpaca.append({"instruction": "Say hello in English.", "input": "", "output": "Hello, nice to meet you!"})
    (folder / "alpaca.json").write_text(json.dumps(alpaca, ensure_ascii=False, indent=2), encoding="utf-8")
    # CSV in GB18030 with one line that is not GB18030 (a stray byte)
    csv_lines = ["department,title,ask,answer"] + [f"内科,{q},{q}请问,{a}" for q, a in rows[60:80]]
    data = ("\n".join(csv_lines) + "\n").encode("gb18030") + b"\xff\xfe,bad,line,\xff\n"
    (folder / "medical.csv").write_bytes(data)
    # TSV couplets, no header
    (folder / "couplets.tsv").write_text("".join(f"{q}\t{a}\n" for q, a in rows[80:100]), encoding="utf-8")
    # parquet (Zhihu-KOL's column names)
    pq.write_table(
        pa.Table.from_pylist([{"INSTRUCTION": q, "RESPONSE": a} for q, a in rows[100:110]]), folder / "zhihu.parquet"
    )
    # ShareGPT: two assistant turns -> two rows, the second with the first exchange as history
    conversation = [
        {"from": "human", "value": FACTS[3][0]},
        {"from": "gpt", "value": FACTS[3][1]},
        {"from": "human", "value": FACTS[4][0]},
        {"from": "gpt", "value": FACTS[4][1]},
    ]
    (folder / "sharegpt.jsonl").write_text(
        json.dumps({"conversations": conversation}, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    # DuIE
    duie = {
        "text": "《平凡的世界》是路遥创作的长篇小说，路遥出生于陕西。",
        "spo_list": [
            {"subject": "平凡的世界", "predicate": "作者", "object": {"@value": "路遥"}},
            {"subject": "路遥", "predicate": "出生地", "object": {"@value": "陕西"}},
        ],
    }
    (folder / "duie.json").write_text(json.dumps(duie, ensure_ascii=False) + "\n", encoding="utf-8")
    # plain text documents (title line, then body) and WikiExtractor output
    (folder / "docs.txt").write_text(
        f"{rows[110][0]}\n{rows[110][1]}\n{rows[111][1]}\n\n{rows[112][0]}\n{rows[112][1]}\n", encoding="utf-8"
    )
    (folder / "wiki.txt").write_text(
        f'<doc id="1" url="u" title="{rows[113][0]}">\n{rows[113][0]}\n\n{rows[113][1]}\n</doc>\n', encoding="utf-8"
    )
    # traditional characters, HTML, a URL, repeated punctuation, English punctuation in Chinese
    messy = [
        {"prompt": "這是什麼軟體？？？", "response": "<p>這是一個開源軟體,請訪問 https://example.com 了解更多!!!</p>"}
    ]
    messy.append({"prompt": "复读", "response": "复读！"})  # the response repeats the prompt
    messy.append({"prompt": "English only?", "response": "Yes, this row has no Chinese at all."})
    (folder / "messy.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in messy), encoding="utf-8"
    )
    # ShareGPT preference data is a separate recipe (prompt/chosen/rejected)
    preference = {
        "conversations": [{"from": "human", "value": FACTS[5][0]}],
        "chosen": {"from": "gpt", "value": FACTS[5][1]},
        "rejected": {"from": "gpt", "value": "不知道。"},
    }
    (folder / "dpo.jsonl").write_text(json.dumps(preference, ensure_ascii=False) + "\n", encoding="utf-8")
    return folder


def sources(raw: Path) -> list[dict]:
    return [
        {"name": "webtext", "format": "jsonl", "files": str(raw / "webtext.jsonl"), "prompt": "title", "response": "content", "where": "star >= 1"},
        {"name": "alpaca", "format": "json", "files": str(raw / "alpaca.json"), "prompt": "{instruction}\n{input}", "response": "output"},
        {"name": "medical", "format": "csv", "encoding": "gb18030", "files": str(raw / "medical.csv"), "prompt": "{title}\n{ask}", "response": "answer"},
        {"name": "couplets", "format": "tsv", "header": False, "columns": ["up", "down"], "files": str(raw / "couplets.tsv"), "prompt": "up", "response": "down", "max_rows": 15},
        {"name": "zhihu", "format": "parquet", "files": str(raw / "zhihu.parquet"), "prompt": "INSTRUCTION", "response": "RESPONSE"},
        {"name": "sharegpt", "format": "jsonl", "kind": "sharegpt", "files": str(raw / "sharegpt.jsonl")},
        {"name": "duie", "format": "jsonl", "kind": "duie", "files": str(raw / "duie.json"), "prompt": "text"},
        {"name": "docs", "format": "text", "kind": "document", "files": str(raw / "docs.txt"), "prompt": ["什么是{title}？", "介绍一下{title}"], "response": "text"},
        {"name": "wiki", "format": "wikiextractor", "kind": "document", "files": str(raw / "wiki.txt"), "prompt": "{title}", "response": "text", "max_response_chars": 20},
        {"name": "messy", "format": "jsonl", "files": str(raw / "messy.jsonl")},
    ]  # fmt: skip


def write_recipe(path: Path, output: Path, source_list: list[dict], **extra) -> Path:
    recipe = {"stage": "data", "output_dir": str(output), "sources": source_list, "workers": 1, "tasks": 2,
              "output_shards": 4, "valid_size": 10, "test_size": 0.05, "min_cjk_ratio": 0.3, **extra}  # fmt: skip
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    return path


def read_split(output: Path, split: str) -> list[dict]:
    files = sorted((output / split).glob("*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


@pytest.fixture(scope="module")
def data_run(raw_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("data") / "out"
    recipe = write_recipe(output.parent / "data.yaml", output, sources(raw_dir))
    run_recipe(recipe, [])
    return output


def all_rows(output: Path) -> list[dict]:
    return [row for split in ("train", "valid", "test") for row in read_split(output, split)]


def dropped(output: Path) -> list[dict]:
    return [row for f in sorted((output / "dropped").glob("*/*.parquet")) for row in pq.read_table(f).to_pylist()]


# -- sources ----------------------------------------------------------------------------------------------------


def test_every_source_kind_yields_rows(data_run):
    kept = {
        name: sum(s["kept"].values())
        for name, s in json.loads((data_run / "report.json").read_text())["sources"].items()
    }
    assert kept["alpaca"] == 3  # the English-only row falls to min_cjk_ratio
    assert kept["medical"] == 20 and kept["zhihu"] == 10 and kept["sharegpt"] == 2 and kept["duie"] == 1
    assert kept["couplets"] == 15  # max_rows
    assert kept["docs"] == 2 and kept["wiki"] == 1


def test_templates_history_and_triples_render_as_the_model_sees_them(data_run, raw_dir):
    rows = {row["prompt"]: row for row in all_rows(data_run)}
    assert rows[FACTS[0][0]]["response"] == FACTS[0][1]  # alpaca: "{instruction}\n{input}" with an empty input
    second_turn = f"用户：{FACTS[3][0]}\n助手：{FACTS[3][1]}\n{FACTS[4][0]}"  # prompt.render_prompt's layout
    assert rows[second_turn]["response"] == FACTS[4][1]
    assert rows[FACTS[3][0]]["response"] == FACTS[3][1]
    duie = next(r for r in rows.values() if r["source"] == "duie")
    assert duie["response"] == "[(平凡的世界,作者,路遥),(路遥,出生地,陕西)]"  # no punctuation rewrites in triples
    wiki = next(r for r in rows.values() if r["source"] == "wiki")
    assert len(wiki["response"]) == 20 and wiki["prompt"].endswith("？")
    docs = [r["prompt"] for r in rows.values() if r["source"] == "docs"]
    assert all(p.startswith(("什么是", "介绍一下")) for p in docs)


def test_where_filter_and_bad_rows_are_counted_with_file_and_line(data_run, raw_dir):
    report = json.loads((data_run / "report.json").read_text())
    at_read = report["sources"]["webtext"]["unreadable_or_filtered_at_read"]
    assert at_read == {"malformed JSON line": 1, "missing field 'content'": 1, "where: condition not met": 6}
    assert report["sources"]["medical"]["unreadable_or_filtered_at_read"] == {"undecodable bytes (gb18030)": 1}
    rows = dropped(data_run)
    malformed = next(r for r in rows if r["reason"] == "malformed JSON line")
    assert malformed["file"] == str(raw_dir / "webtext.jsonl") and malformed["line"] == 6
    undecodable = next(r for r in rows if r["reason"].startswith("undecodable"))
    assert undecodable["file"].endswith("medical.csv") and undecodable["line"] == 22


def test_exact_and_near_duplicates_are_dropped_once(data_run):
    report = json.loads((data_run / "report.json").read_text())
    assert report["sources"]["webtext"]["exact_duplicates"] == 1
    assert report["sources"]["webtext"]["near_duplicates"] == 1
    prompts = [r["prompt"] for r in all_rows(data_run)]
    assert len(prompts) == len(set(prompts))


def test_cleaning_rules_in_the_run(data_run):
    rows = all_rows(data_run)
    messy = next(r for r in rows if r["source"] == "messy")
    assert messy["prompt"] == "这是什么软体？"  # OpenCC t2s: characters, not Taiwan phrases (軟體 is not 软件)
    assert messy["response"] == "这是一个开源软体，请访问 了解更多！"
    reasons = {(r["source"], r["reason"]) for r in dropped(data_run)}
    assert ("messy", "response repeats the prompt") in reasons and ("messy", "too little CJK text") in reasons
    changed = json.loads((data_run / "report.json").read_text())["rewrites_changed_rows"]
    assert changed["traditional_to_simplified"] >= 1 and changed["strip_html"] >= 1 and changed["strip_urls"] >= 1


# -- split, files and report ------------------------------------------------------------------------------------


def test_split_counts_and_files(data_run):
    report = json.loads((data_run / "report.json").read_text())
    total = sum(report["splits"].values())
    assert report["splits"]["valid"] == 10
    assert report["splits"]["test"] == round(total * 0.05)
    assert report["files"]["train"] == 4  # output_shards
    assert len(all_rows(data_run)) == total
    assert set(pq.read_schema(next((data_run / "train").glob("*.parquet"))).names) == {"prompt", "response", "source"}
    assert (data_run / "report.md").read_text().startswith("# Data report")
    assert (data_run / "lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (data_run / ".work").exists()  # intermediates go after a finished run


def test_same_seed_same_output(data_run, raw_dir, tmp_path):
    output = tmp_path / "again"
    run_recipe(write_recipe(tmp_path / "data.yaml", output, sources(raw_dir)), ["--workers", "2"])
    for split in ("train", "valid", "test"):
        assert read_split(output, split) == read_split(data_run, split)


def test_preference_sources_give_prompt_chosen_rejected(raw_dir, tmp_path):
    source = {"name": "dpo", "format": "jsonl", "kind": "sharegpt_preference", "files": str(raw_dir / "dpo.jsonl")}
    run_recipe(write_recipe(tmp_path / "dpo.yaml", tmp_path / "dpo", [source], valid_size=0, test_size=0), [])
    rows = read_split(tmp_path / "dpo", "train")
    assert rows == [{"prompt": FACTS[5][0], "chosen": FACTS[5][1], "rejected": "不知道。", "source": "dpo"}]


# -- errors -----------------------------------------------------------------------------------------------------


def test_recipe_errors_name_the_source_and_key(raw_dir, tmp_path, capsys):
    bad = [{**sources(raw_dir)[0], "fromat": "jsonl"}]
    missing = [{"name": "x", "format": "jsonl", "files": str(tmp_path / "nope.jsonl")}]
    for name, source_list in (("a", bad), ("b", missing)):
        with pytest.raises(SystemExit) as exit_info:
            run_recipe(write_recipe(tmp_path / f"{name}.yaml", tmp_path / name, source_list), [])
        assert exit_info.value.code == 2
        assert not (tmp_path / name).exists()  # refused before anything ran
    errors = capsys.readouterr().err
    assert "sources[0] (webtext): unknown key 'fromat' (did you mean 'format'?)" in errors
    assert "sources[0] (x): files: no such file or directory" in errors


def test_unreadable_file_is_an_error_naming_it(tmp_path, capsys):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    recipe = write_recipe(
        tmp_path / "c.yaml", tmp_path / "c", [{"name": "p", "format": "parquet", "files": str(broken)}]
    )
    with pytest.raises(SystemExit) as exit_info:
        run_recipe(recipe, [])
    assert exit_info.value.code == 1
    assert f"{broken}: not a readable parquet file" in capsys.readouterr().err


def test_finished_output_is_not_replaced_without_overwrite(data_run, raw_dir, tmp_path):
    recipe = write_recipe(tmp_path / "d.yaml", data_run, sources(raw_dir))
    with pytest.raises(SystemExit) as exit_info:
        run_recipe(recipe, [])
    assert exit_info.value.code == 2


# -- resume -----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_interrupted_run_resumes_without_redoing_finished_tasks(raw_dir, tmp_path):
    """SIGINT while pipeline 3 runs; the second run leaves the finished pipelines' files as they were."""
    output = tmp_path / "resume"
    big = tmp_path / "big.jsonl"
    rows = unique_rows(60000, seed=3)
    big.write_text(
        "".join(json.dumps({"prompt": q, "response": a}, ensure_ascii=False) + "\n" for q, a in rows), encoding="utf-8"
    )
    source = [{"name": "big", "format": "jsonl", "files": str(big)}]
    recipe = write_recipe(tmp_path / "r.yaml", output, source, workers=2, tasks=4, keep_work=True)
    command = [str(Path(sys.executable).with_name("sccl")), "run", str(recipe)]
    # Ctrl+C as a terminal sends it. The child gets SIGINT's default disposition back: a process started with SIGINT
    # ignored (as this one can be, after earlier in-process runs in the same pytest session) keeps ignoring it.
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    log = []
    for line in process.stdout:
        log.append(line)
        if "[3/8]" in line:  # pipelines 1 (clean) and 2 (exact/find) are finished
            time.sleep(1.5)  # inside pipeline 3's worker pool (a Ctrl+C while datatrove starts one can be lost)
            os.killpg(process.pid, signal.SIGINT)
            break
    for _ in range(10):  # Ctrl+C again while it has not stopped, as a user would
        try:
            process.wait(timeout=2)
            break
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=60)
    assert process.returncode != 0, "".join(log)
    assert not (output / "report.json").exists()
    finished = [*(output / ".work" / "cleaned").glob("*.parquet"), *(output / ".work" / "exact_dups").rglob("*.*")]
    stamps = {p: p.stat().st_mtime_ns for p in finished}
    assert len(list((output / ".work" / "logs" / "1-clean" / "completions").iterdir())) == 4
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "resuming the unfinished run" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in finished} == stamps  # not redone
    report = json.loads((output / "report.json").read_text())
    assert sum(report["splits"].values()) == 60000


# -- a Ray cluster on 127.0.0.1 ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_recipe_runs_on_a_ray_cluster(raw_dir, data_run, tmp_path):
    try:
        import ray  # noqa: F401
    except ImportError:
        missing("the Ray test needs the cluster extra: pip install -e '.[cluster]' (make setup installs it)")
    ray = Path(sys.executable).with_name("ray")
    port = "6391"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    started = subprocess.run([str(ray), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", port, "--num-cpus", "2",
                              "--include-dashboard", "false", "--disable-usage-stats"], capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        output = tmp_path / "ray"
        recipe = write_recipe(
            tmp_path / "ray.yaml", output, sources(raw_dir), executor="ray", ray_address=f"127.0.0.1:{port}"
        )
        result = subprocess.run([str(Path(sys.executable).with_name("sccl")), "run", str(recipe)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        for split in ("train", "valid", "test"):  # the same rows as the local run of the same recipe
            assert read_split(output, split) == read_split(data_run, split)
    finally:
        subprocess.run([str(ray), "stop", "--force"], capture_output=True, env=env, timeout=120)


# -- real data: the shipped demo recipe on ../shared/data/raw, then SFT on its output ---------------------------


@pytest.mark.slow
def test_demo_recipe_on_shared_raw_data_then_sft(shared_data, tiny_model_dir, tmp_path):
    if not (shared_data / "raw").is_dir():
        missing(f"the raw data folder is missing: {shared_data / 'raw'}")
    output = tmp_path / "demo_raw"
    recipe = ROOT / "recipes" / "data" / "demo_raw.yaml"
    text = recipe.read_text(encoding="utf-8").replace("../shared/data", str(shared_data))
    (tmp_path / "demo_raw.yaml").write_text(text, encoding="utf-8")
    run_recipe(tmp_path / "demo_raw.yaml", ["--output_dir", str(output)])
    report = json.loads((output / "report.json").read_text())
    assert report["splits"]["train"] > 30000 and report["splits"]["test"] == 1000
    assert all(sum(s["kept"].values()) > 0 for s in report["sources"].values())
    run_sft(tiny_model_dir, output / "train", tmp_path / "sft", 2)
    assert (tmp_path / "sft" / "model.safetensors").is_file()


# -- the seeds' data recipes: each source's published file names and format, on tiny files written here ----------

SEED_DATA_RECIPES = ["chatlm_mix", "belle_sft", "dpo_reference", "dpo_mix"]


def template_fields(value) -> list[str]:
    """The record fields a source's prompt/response names: a field, or the {fields} of templates."""
    import string

    values = value if isinstance(value, list) else [value]
    named = [f for v in values for _, f, _, _ in string.Formatter().parse(v) if f]
    return named or values


def write_published_files(source: dict, root: Path, rows: list[tuple[str, str]]) -> int:
    """Tiny files at the source's own (published) paths, in its format, with records that its `where:` keeps,
    plus one record per `not contains` condition that it must drop. Returns how many records it must drop."""
    from sccl_hf.data_sources import Condition

    conditions = [
        Condition(c) for c in ([source["where"]] if isinstance(source.get("where"), str) else source.get("where", []))
    ]
    prompt_fields = template_fields(source.get("prompt", "prompt"))
    answer_fields = (
        [source["chosen"], source["rejected"]] if "chosen" in source else [source.get("response", "response")]
    )
    records = []
    for question, answer in rows:
        if source.get("kind") == "sharegpt":
            record = {
                "id": "1",
                "conversations": [{"from": "human", "value": question}, {"from": "assistant", "value": answer}],
            }
        else:
            record = {f: question if i == 0 else "补充" + question for i, f in enumerate(prompt_fields)}
            record |= {f: answer if i == 0 else answer[::-1] for i, f in enumerate(answer_fields)}
        for condition in conditions:
            if condition.op in (">=", ">", "=="):
                record[condition.field] = condition.value + (1 if condition.op == ">" else 0)
        records.append(record)
    must_drop = 0
    for condition in conditions:
        if condition.op == "not contains":
            word = condition.value[0] if isinstance(condition.value, list) else condition.value
            bad = json.loads(json.dumps(records[0], ensure_ascii=False))
            if source.get("kind") == "sharegpt":
                bad["conversations"][0]["value"] = f"请{word}：" + bad["conversations"][0]["value"]
            else:
                bad[condition.field] = f"{word}：" + bad[condition.field]
            records.append(bad)
            must_drop += 1
    files = source["files"] if isinstance(source["files"], list) else [source["files"]]
    for index, pattern in enumerate(files):
        path = root / pattern.replace("*", "00")
        path.parent.mkdir(parents=True, exist_ok=True)
        part = records[index :: len(files)]
        if source["format"] == "jsonl":
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
        elif source["format"] == "json":
            path.write_text(json.dumps(part, ensure_ascii=False, indent=2), encoding="utf-8")
        elif source["format"] == "parquet":
            pq.write_table(pa.Table.from_pylist(part), path)
        elif source["format"] == "csv":
            columns = ["department", *dict.fromkeys(k for r in part for k in r)]
            lines = [",".join(columns)] + [",".join(["内科", *(r[c] for c in columns[1:])]) for r in part]
            path.write_bytes(("\n".join(lines) + "\n").encode(source.get("encoding", "utf-8")))
        elif source["format"] == "wikiextractor":
            docs = [
                f'<doc id="{i}" url="u" title="{r[prompt_fields[0]]}">\n{r[prompt_fields[0]]}\n\n{r["text"]}\n</doc>\n'
                for i, r in enumerate(part)
            ]
            path.write_text("".join(docs), encoding="utf-8")
        else:
            raise AssertionError(f"no fixture writer for format {source['format']}")
    return must_drop


@pytest.mark.slow
@pytest.mark.parametrize("name", SEED_DATA_RECIPES)
def test_the_seeds_data_recipes_read_their_sources_published_formats(name, tmp_path, monkeypatch):
    """Each source of recipes/data/<name>.yaml gets tiny files at its published paths, in its format; the shipped
    recipe then runs unchanged (but for the split sizes): every source gives rows, and the seed's filters (no
    translation tasks, no tables) drop what they must, under the `where:` reason."""
    recipe = yaml.safe_load((ROOT / "recipes" / "data" / f"{name}.yaml").read_text(encoding="utf-8"))
    must_drop = {}
    for index, source in enumerate(recipe["sources"]):
        must_drop[source["name"]] = write_published_files(source, tmp_path, unique_rows(6, seed=100 + index))
    monkeypatch.chdir(tmp_path)
    run_recipe(ROOT / "recipes" / "data" / f"{name}.yaml", ["--valid_size", "1", "--test_size", "0", "--workers", "1"])
    output = tmp_path / recipe["output_dir"]
    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    for source in recipe["sources"]:
        kept = sum(report["sources"][source["name"]]["kept"].values())
        assert kept >= 5, f"{source['name']}: {kept} rows kept, {report['sources'][source['name']]}"
    dropped_by_where = Counter(r["source"] for r in dropped(output) if r["reason"] == "where: condition not met")
    assert dropped_by_where == Counter({k: v for k, v in must_drop.items() if v})
    columns = pq.read_table(next((output / "train").glob("*.parquet"))).column_names
    assert ({"prompt", "chosen", "rejected"} if name == "dpo_mix" else {"prompt", "response"}) <= set(columns)


@pytest.mark.slow
def test_code_in_the_shared_alpaca_rows_is_kept_byte_for_byte(shared_data, tmp_path):
    """Every code block (fenced or indented) of the alpaca rows that the stage keeps reaches the output exactly as
    its source wrote it, while the prose around it is still cleaned."""
    from sccl_hf.cleaning import code_spans

    raw = shared_data / "raw" / "alpaca_zh_part00.json"
    if not raw.is_file():
        missing(f"the raw alpaca file is missing: {raw}")
    output = tmp_path / "alpaca"
    source = {
        "name": "alpaca",
        "format": "json",
        "files": str(raw),
        "prompt": "{instruction}\n{input}",
        "response": "output",
    }
    run_recipe(write_recipe(tmp_path / "r.yaml", output, [source], test_size=0, valid_size=0), [])
    items = json.loads(raw.read_text(encoding="utf-8"))
    with_code = {
        n: [part for is_code, part in code_spans(item["output"]) if is_code] for n, item in enumerate(items, 1)
    }
    with_code = {n: blocks for n, blocks in with_code.items() if blocks}
    gone = {row["line"] for row in dropped(output)}
    kept = {n: blocks for n, blocks in with_code.items() if n not in gone}
    responses = "\n\x00\n".join(
        r for f in sorted((output / "train").glob("*.parquet")) for r in pq.read_table(f).column("response").to_pylist()
    )
    intact = [n for n, blocks in kept.items() if all(block in responses for block in blocks)]
    print(f"alpaca rows with code: {len(with_code)}, kept by the stage: {len(kept)}, code intact: {len(intact)}")
    assert len(with_code) > 100 and len(kept) > 100
    assert sorted(intact) == sorted(kept), f"rows whose code changed: {sorted(set(kept) - set(intact))[:10]}"
    assert "    如果 n == 0：" in responses  # indentation and the spaces inside the line survive


# -- unit: cleaning and shingles --------------------------------------------------------------------------------


def test_each_rewrite_does_one_thing():
    steps = dict(rewrites(CleaningArguments()))
    assert steps["nfkc"]("ＡＢＣ１２３") == "ABC123"
    assert steps["traditional_to_simplified"]("漢字") == "汉字"
    assert steps["strip_html"]("<b>粗体</b>&amp;<!-- 注释 -->a<b") == "粗体&a<b"
    assert steps["strip_urls"]("见 https://a.b/c?d=1 和 www.x.cn。") == "见  和 。"
    assert steps["strip_control"]("a\x00b\u200bc\nd") == "abc\nd"
    assert steps["chinese_punctuation"]("你好,世界!(测试) 3.14, a.b") == "你好，世界！（测试） 3.14, a.b"
    assert steps["collapse_punctuation"]("好！！！真的？？……………——————") == "好！真的？……——"
    assert tidy("  a   b \n\n  c  ") == "a b\n\nc"


def test_code_keeps_its_text_and_the_prose_around_it_is_cleaned():
    steps = dict(rewrites(CleaningArguments()))
    indented = "写一个函数,比较两个数:\ndef add(a, b):\n    if a > b:  # 大(的)\n        return a\n\n    return b\n结果很  简单,对吧"
    cleaned = tidy(steps["chinese_punctuation"](indented))
    assert cleaned == (
        "写一个函数，比较两个数：\ndef add(a, b):\n    if a > b:  # 大(的)\n        return a\n\n    return b\n结果很 简单，对吧"
    )
    fenced = "代码如下:\n```python\nx  =  (1,2)  # 中文,注释\n\ty = x\n```\n完毕,好"
    assert (
        tidy(steps["chinese_punctuation"](fenced))
        == "代码如下：\n```python\nx  =  (1,2)  # 中文,注释\n\ty = x\n```\n完毕，好"
    )
    # prose indented after a full sentence is prose: cleaned as before
    assert tidy(steps["chinese_punctuation"]("第一段。\n  第二段,缩进")) == "第一段。\n第二段，缩进"


def test_drop_reasons():
    args = CleaningArguments(
        min_prompt_chars=2, max_prompt_chars=10, min_response_chars=2, max_response_chars=10, min_cjk_ratio=0.5
    )
    assert drop_reason("问", ["回答"], args) == "prompt too short"
    assert drop_reason("问" * 11, ["回答"], args) == "prompt too long"
    assert drop_reason("问题", ["答"], args) == "response too short"
    assert drop_reason("问题", ["答" * 11], args) == "response too long"
    assert drop_reason("问题", ["问题！"], args) == "response repeats the prompt"
    assert drop_reason("问题", ["abcdef"], args) == "too little CJK text"
    assert drop_reason("问题", ["回答"], args) is None


def test_character_shingles_are_datatroves_character_ngrams():
    from datatrove.utils.text import ngrams

    text = "长江 是中国最长的河流"
    grams = ["".join(g) for g in ngrams(CharacterTokenizer().word_tokenize(text), 3)]
    expected = {int(character_shingles(g, 3)[0, 0]) for g in grams}
    assert set(character_shingles(text, 3)[:, 0].tolist()) == expected
    assert character_shingles("短", 5).shape == (1, 1)


def test_lsh_threshold_and_split_counts():
    assert abs(lsh_threshold(14, 8) - 0.719) < 1e-3
    assert split_counts(1000, 0.1, 25) == (100, 25)
    assert split_counts(10, 50, 50) == (10, 0)


def test_batched_signatures_equal_the_row_by_row_ones(tmp_path):
    import numpy as np
    from datatrove.pipeline.dedup import MinhashConfig
    from datatrove.utils.hashing import HashConfig

    from sccl_hf.data_pipeline import CharacterMinhashSignature

    config = MinhashConfig(n_grams=5, num_buckets=4, hashes_per_bucket=3, hash_config=HashConfig(precision=32))
    step = CharacterMinhashSignature(str(tmp_path), config)
    texts = [FACTS[0][0] + FACTS[0][1], "短句", "短，句！", "", "  ", "A1，b2！" * 5, FACTS[1][1]]
    batched = step.batch_signatures(texts)
    for text, row in zip(texts, batched):
        shingles = step.get_shingles(text)
        expected = np.array(step.get_signature(shingles)).reshape(-1) if shingles.size else np.full(12, 2**32 - 1)
        assert row.tolist() == expected.tolist(), text
