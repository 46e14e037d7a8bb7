"""The CTranslate2 engine: export, the same greedy answers as the torch engine at float32, and the apps on it."""

import pytest

from conftest import ROOT
from sccl_hf.stages import run_recipe


def export_ct2_dirs(tmp_path_factory, model_dir, name: str) -> dict:
    """{quantization: folder}: `model_dir` exported by stage export_ct2 at float32 and at int8."""
    out = {}
    for quantization in ("float32", "int8"):
        folder = tmp_path_factory.mktemp(f"{name}_{quantization}")
        run_recipe(ROOT / "recipes/demo/export_ct2.yaml", ["--model_dir", str(model_dir), "--output_dir",
                                                           str(folder), "--quantization", quantization])  # fmt: skip
        out[quantization] = folder
    return out


@pytest.fixture(scope="module")
def ct2_dirs(tmp_path_factory, trained_model_dir):
    return export_ct2_dirs(tmp_path_factory, trained_model_dir, "ct2")


def test_float32_greedy_answers_equal_the_torch_engine_token_for_token(answering_model_dir, tmp_path):
    """On the model that answers at length (tens of tokens, a different answer for every prompt), on the prompts
    whose every greedy step the fixture made sure is won by a margin: on other prompts two float32 kernels may
    break a near-tie differently, and either token is right."""
    from conftest import ANSWERING_PROMPTS
    from sccl_hf.engine import Engine, load_engine

    folder = tmp_path / "ct2"
    run_recipe(ROOT / "recipes/demo/export_ct2.yaml", ["--model_dir", str(answering_model_dir), "--output_dir",
                                                       str(folder), "--quantization", "float32"])  # fmt: skip
    prompts = ANSWERING_PROMPTS
    torch_engine, ct2_engine = Engine.load(answering_model_dir, "cpu"), load_engine(folder, "cpu")
    expected = torch_engine.answer(prompts, max_new_tokens=40)
    got = ct2_engine.answer(prompts, max_new_tokens=40)
    assert [(a.text, a.tokens, a.ended) for a in got] == [(a.text, a.tokens, a.ended) for a in expected]
    assert len({a.text for a in got[:8]}) == 8 and sum(a.tokens for a in got[:8]) >= 200  # an oracle worth matching
    assert any(a.ended for a in got) and not all(a.ended for a in got)


def test_int8_answers_mostly_agree_with_float32(ct2_dirs, trained_model_dir, demo_data):
    import pyarrow.parquet as pq

    from sccl_hf.engine import Engine, load_engine

    prompts = pq.read_table(demo_data["held_out"]).column("prompt").to_pylist()
    prompts += ["浙江的省会是哪里？", "大的反义词是什么？", "3加5等于多少？", "把37写成汉字。"]
    expected = Engine.load(trained_model_dir, "cpu").answer(prompts, max_new_tokens=24)
    assert expected[-4].text == "杭州"
    int8 = load_engine(ct2_dirs["int8"], "cpu").generate(prompts, max_new_tokens=24)
    agreement = sum(a == b.text for a, b in zip(int8, expected)) / len(prompts)
    assert agreement > 0.5  # reported by benchmarks/bench_engines.py; here only a sanity floor


def test_streaming_on_ct2_matches_its_batch_answer_and_stops_when_cancelled(ct2_dirs):
    import threading

    from sccl_hf.engine import GenerationCancelled, load_engine

    engine = load_engine(ct2_dirs["float32"], "cpu")
    pieces = []
    result = engine.stream("浙江的省会是哪里？", pieces.append, max_new_tokens=24)
    assert "".join(pieces).strip() == result.text == engine.generate(["浙江的省会是哪里？"], max_new_tokens=24)[0]
    assert result.finish_reason == "stop" and result.completion_tokens >= 2
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(GenerationCancelled):
        engine.stream("浙江的省会是哪里？", pieces.append, max_new_tokens=24, cancelled=cancelled)


def test_eval_gen_and_a_torch_folder_with_engine_ct2(ct2_dirs, trained_model_dir, fixed_rows_file, tmp_path):
    import shutil

    recipe = tmp_path / "gen.yaml"
    recipe.write_text(f"stage: eval_gen\nmodel_name_or_path: {ct2_dirs['float32']}\neval_files: [{fixed_rows_file}]\n")
    results = run_recipe(recipe, ["--output_dir", str(tmp_path / "out"), "--engine", "ct2"])
    assert results["exact_match"] == 1.0
    plain = shutil.copytree(trained_model_dir, tmp_path / "plain")  # a torch folder: converted into its cache
    run_recipe(recipe, ["--output_dir", str(tmp_path / "out2"), "--engine", "ct2", "--model_name_or_path", str(plain)])
    assert (plain / ".ct2" / "int8" / "model.bin").is_file()
    with pytest.raises(SystemExit):  # neither a model folder nor a CTranslate2 folder: a one-line error
        run_recipe(recipe, ["--output_dir", str(tmp_path / "out3"), "--engine", "ct2",
                            "--model_name_or_path", str(tmp_path / "out")])  # fmt: skip


def test_a_plain_model_folder_is_converted_once_and_reused_while_its_weights_are_unchanged(
    answering_model_dir, answering_ct2_dirs, tmp_path, capsys
):
    """`--engine ct2` on a plain model folder: converted into `<folder>/.ct2/int8` on first use, with the answers
    of an explicit export_ct2 at int8; reused (not rewritten) next time; converted again once the weights change."""
    import shutil

    import torch

    from conftest import ANSWERING_PROMPTS
    from sccl_hf.engine import load_engine
    from sccl_hf.model import load_model, load_tokenizer, save_model_dir

    folder = shutil.copytree(answering_model_dir, tmp_path / "model")
    exported = load_engine(answering_ct2_dirs["int8"], "cpu").generate(ANSWERING_PROMPTS, max_new_tokens=30)
    assert load_engine(folder, "cpu", "ct2").generate(ANSWERING_PROMPTS, max_new_tokens=30) == exported
    assert "ct2: converted" in capsys.readouterr().err
    model_bin = folder / ".ct2" / "int8" / "model.bin"
    written = model_bin.stat().st_mtime_ns
    assert load_engine(folder, "cpu", "ct2").generate(ANSWERING_PROMPTS, max_new_tokens=30) == exported
    assert "ct2: using" in capsys.readouterr().err and model_bin.stat().st_mtime_ns == written
    model = load_model(folder)
    with torch.no_grad():
        model.lm_head.weight.mul_(-1)  # other weights: other answers
    save_model_dir(model, load_tokenizer(folder), folder)
    changed = load_engine(folder, "cpu", "ct2").generate(ANSWERING_PROMPTS, max_new_tokens=30)
    assert "changed since" in capsys.readouterr().err and changed != exported


@pytest.mark.slow
def test_serve_with_the_ct2_engine(ct2_dirs):
    from openai import OpenAI

    from sccl_hf.apps.serve import LocalServer

    with LocalServer(ct2_dirs["float32"], "--engine", "ct2") as server:
        client = OpenAI(base_url=f"{server.url}/v1", api_key="unused")
        messages = [{"role": "user", "content": "浙江的省会是哪里？"}]
        assert (
            client.chat.completions.create(model="any", messages=messages, temperature=0).choices[0].message.content
            == "杭州"
        )
        stream = client.chat.completions.create(model="any", messages=messages, temperature=0, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream) == "杭州"


@pytest.fixture(scope="module")
def answering_ct2_dirs(tmp_path_factory, answering_model_dir):
    return export_ct2_dirs(tmp_path_factory, answering_model_dir, "answering_ct2")


@pytest.mark.parametrize("quantization, lanes", [("float32", 1), ("int8", 1), ("int8", 2)])
def test_ct2_batched_requests_equal_each_request_alone(answering_ct2_dirs, quantization, lanes):
    """Concurrent requests, each with its own max_new_tokens, decoded in shared CTranslate2 batches (in one lane
    or two): every answer (text, tokens, how it ended) and its stream equal the request answered alone; a
    cancelled request stops."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from conftest import ANSWERING_PROMPTS
    from sccl_hf.ct2 import CT2BatchedGenerator
    from sccl_hf.engine import GenerationCancelled, load_engine

    engine = load_engine(answering_ct2_dirs[quantization], "cpu", lanes=lanes)
    limits = [40, 12, 33, 5, 40, 21, 8, 40]
    alone = [engine.answer([p], max_new_tokens=n)[0] for p, n in zip(ANSWERING_PROMPTS, limits)]
    assert len({a.text for a in alone}) == len(alone) and any(a.ended for a in alone)
    batcher = CT2BatchedGenerator(engine, max_batch=8)
    start = threading.Barrier(len(limits) + 1)

    def ask(k):
        pieces = []
        start.wait()
        return batcher.submit(ANSWERING_PROMPTS[k], pieces.append, limits[k], search_type="greedy"), pieces

    cancelled, cancelled_pieces = threading.Event(), []

    def ask_and_cancel():
        start.wait()

        def on_text(piece):
            cancelled_pieces.append(piece)
            cancelled.set()

        with pytest.raises(GenerationCancelled):
            batcher.submit(ANSWERING_PROMPTS[0], on_text, 40, cancelled=cancelled, search_type="greedy")

    with ThreadPoolExecutor(len(limits) + 1) as pool:
        futures = [pool.submit(ask, k) for k in range(len(limits))] + [pool.submit(ask_and_cancel)]
        results = [f.result(timeout=120) for f in futures[:-1]]
        futures[-1].result(timeout=120)
    batcher.close()
    for (result, pieces), expected in zip(results, alone):
        ended = result.finish_reason == "stop"
        assert (result.text, result.completion_tokens, ended) == (expected.text, expected.tokens, expected.ended)
        assert "".join(pieces).strip() == result.text
    assert batcher.batches < len(limits)  # requests shared batches
    assert 0 < len("".join(cancelled_pieces)) < len(alone[0].text)


@pytest.mark.parametrize("lanes", [1, 2])
def test_with_two_lanes_a_request_starts_while_a_batch_is_decoding(answering_ct2_dirs, lanes):
    """A request that arrives while a batch decodes waits for it to end with one lane (CTranslate2 decodes a batch
    to its end) and is answered before it ends with two (`sccl serve --workers 2`)."""
    import threading
    import time

    from conftest import ANSWERING_PROMPTS
    from sccl_hf.ct2 import CT2BatchedGenerator
    from sccl_hf.engine import load_engine

    engine = load_engine(answering_ct2_dirs["int8"], "cpu", lanes=lanes)
    assert engine.translator.num_translators == lanes
    batcher = CT2BatchedGenerator(engine, max_batch=8)
    late, finished = [], {}

    def slow_reader(piece):  # the long answer's stream: a slow client, so its batch decodes for a while
        time.sleep(0.01)
        finished["long's last piece"] = time.perf_counter()
        if not late:
            late.append(threading.Thread(target=ask_late))
            late[0].start()

    def ask_late():
        batcher.submit(ANSWERING_PROMPTS[1], lambda piece: None, 3, search_type="greedy")
        finished["late"] = time.perf_counter()

    long = batcher.submit(ANSWERING_PROMPTS[0], slow_reader, 40, search_type="greedy")
    finished["long"] = time.perf_counter()
    late[0].join(timeout=60)
    batcher.close()
    assert long.completion_tokens > 10
    if lanes == 2:
        assert finished["late"] < finished["long"]
    else:
        # One lane: the late request's batch starts after the long one's ended, whose last piece was handed over in
        # that batch. (Not `finished["long"]`: the thread that records it may wake after the 3-token answer is done.)
        assert finished["late"] > finished["long's last piece"]


@pytest.mark.parametrize("gather", [0.0, 0.3])
def test_after_a_shared_batch_a_batch_waits_for_requests_that_come_together(answering_ct2_dirs, gather, monkeypatch):
    """Once a batch was shared, the next one waits GATHER_SECONDS for more requests: two requests 30 ms apart then
    share one batch. Without the window the first starts alone and the second waits for it (two batches)."""
    import threading
    import time

    from conftest import ANSWERING_PROMPTS
    from sccl_hf import ct2
    from sccl_hf.engine import load_engine

    monkeypatch.setattr(ct2, "GATHER_SECONDS", gather)
    batcher = ct2.CT2BatchedGenerator(load_engine(answering_ct2_dirs["int8"], "cpu"), max_batch=8)

    def ask(k, pause=0.0):
        time.sleep(pause)
        batcher.submit(ANSWERING_PROMPTS[k], lambda piece: time.sleep(0.003), 30, search_type="greedy")

    def together(pauses):
        threads = [threading.Thread(target=ask, args=(k, pause)) for k, pause in enumerate(pauses)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    together([0.0, 0.01, 0.01])  # a lone request, then two that arrive while it decodes: they share the next batch
    before = batcher.batches
    assert before == 2
    together([0.0, 0.03])
    batcher.close()
    assert batcher.batches - before == (1 if gather else 2)


def test_ct2_batcher_refuses_what_ctranslate2_cannot_do(answering_ct2_dirs):
    from sccl_hf.ct2 import CT2BatchedGenerator
    from sccl_hf.engine import load_engine

    batcher = CT2BatchedGenerator(load_engine(answering_ct2_dirs["int8"], "cpu"))
    with pytest.raises(ValueError, match="seed"):
        batcher.submit("你好", print, 8, search_type="sampling", seed=3)
    with pytest.raises(ValueError, match="contrastive"):
        batcher.submit("你好", print, 8, search_type="contrastive")
    with pytest.raises(ValueError, match="beam"):
        batcher.submit("你好", print, 8, search_type="beam")
    batcher.close()


@pytest.mark.slow
def test_the_ct2_server_batches_concurrent_requests_with_the_answers_they_get_alone(answering_ct2_dirs):
    """`sccl serve --engine ct2`: eight concurrent greedy requests (streamed and not) over HTTP get the answers
    CTranslate2 gives each of them alone, and the server ran them in shared batches (fewer batches than requests:
    /health counts them)."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from conftest import ANSWERING_PROMPTS
    from sccl_hf.apps.serve import LocalServer
    from sccl_hf.engine import load_engine

    engine = load_engine(answering_ct2_dirs["int8"], "cpu")
    alone = [a.text for a in (engine.answer([p], max_new_tokens=30)[0] for p in ANSWERING_PROMPTS)]

    with LocalServer(answering_ct2_dirs["int8"], "--engine", "ct2") as server:

        def ask(k):
            body = {"messages": [{"role": "user", "content": ANSWERING_PROMPTS[k]}], "temperature": 0,
                    "max_tokens": 30, "stream": k % 2 == 1}  # fmt: skip
            response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)
            if not body["stream"]:
                return response.json()["choices"][0]["message"]["content"]
            chunks = [line[6:] for line in response.text.splitlines() if line.startswith("data: {")]
            return "".join(__import__("json").loads(c)["choices"][0]["delta"].get("content", "") for c in chunks)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, range(8)))
        health = httpx.get(f"{server.url}/health", timeout=30).json()
    assert answers == alone
    assert health["batches"] < 8
