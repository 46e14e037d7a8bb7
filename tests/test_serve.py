"""A real uvicorn server on 127.0.0.1 serving a tiny saved model, driven by real clients."""

import concurrent.futures
import json

import httpx
import pytest
from openai import OpenAI

from conftest import ROOT, need_chromium, page_dom
from sccl_hf.apps.serve import LocalServer

pytestmark = pytest.mark.slow  # training runs, real processes and servers

KEY = "test-key-123"


@pytest.fixture(scope="module")
def server(trained_model_dir):
    local = LocalServer(trained_model_dir)
    yield local.url
    output = local.stop()
    assert "Traceback" not in output, output


@pytest.fixture(scope="module")
def keyed_server(trained_model_dir):
    with LocalServer(trained_model_dir, "--api-key", KEY) as local:
        yield local.url


def test_openai_client_gets_an_answer(server):
    client = OpenAI(base_url=f"{server}/v1", api_key="unused")
    completion = client.chat.completions.create(
        model="any", messages=[{"role": "user", "content": "浙江的省会是哪里？"}], temperature=0
    )
    assert completion.choices[0].message.content == "杭州"
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_openai_client_streams_an_answer(server):
    client = OpenAI(base_url=f"{server}/v1", api_key="unused")
    stream = client.chat.completions.create(
        model="any", messages=[{"role": "user", "content": "大的反义词是什么？"}], temperature=0, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "小"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_models_and_health(server):
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    models = httpx.get(f"{server}/v1/models").json()
    assert models["object"] == "list" and len(models["data"]) == 1


def test_chatlm_api_without_a_key(server):
    response = httpx.post(f"{server}/api/chat", json={"input_txt": "3加5等于多少？"}, timeout=60)
    assert response.status_code == 200 and response.json() == {"response": "8"}


def test_chatlm_api_with_a_key(keyed_server):
    url = f"{keyed_server}/api/chat"
    body = {"input_txt": "3加5等于多少？"}
    assert httpx.post(url, json=body).status_code == 401
    wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
    right = httpx.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert right.status_code == 200 and right.json() == {"response": "8"}
    assert httpx.get(f"{keyed_server}/v1/models").status_code == 401
    assert httpx.get(f"{keyed_server}/health").status_code == 200


def test_32_concurrent_requests_all_succeed(server):
    prompts = ["浙江的省会是哪里？", "大的反义词是什么？", "3加5等于多少？", "把37写成汉字。"]
    answers = {
        "浙江的省会是哪里？": "杭州",
        "大的反义词是什么？": "小",
        "3加5等于多少？": "8",
        "把37写成汉字。": "三十七",
    }

    def ask(i):
        prompt = prompts[i % 4]
        body = {"messages": [{"role": "user", "content": prompt}], "temperature": 0, "stream": i % 2 == 0}
        with httpx.Client(timeout=120) as client:
            if i % 2:
                response = client.post(f"{server}/v1/chat/completions", json=body)
                return prompt, response.status_code, response.json()["choices"][0]["message"]["content"]
            text = ""
            with client.stream("POST", f"{server}/v1/chat/completions", json=body) as response:
                for line in response.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        text += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                return prompt, response.status_code, text

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(ask, range(32)))
    assert all(status == 200 for _, status, _ in results)
    assert all(text == answers[prompt] for prompt, _, text in results)


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/chat", b"not json", 400),
        ("/api/chat", {}, 400),
        ("/api/chat", {"input_txt": ""}, 400),
        ("/api/chat", {"input_txt": 42}, 400),
        ("/api/chat", {"input_txt": "很长的问题" * 200}, 400),
        ("/v1/chat/completions", {"messages": []}, 400),
        ("/v1/chat/completions", {"messages": [{"role": "user"}]}, 400),
        ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, 400),
        ("/v1/chat/completions", {"messages": [{"role": "system", "content": "hi"}]}, 400),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 2}, 400),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "temperature": -1}, 400),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400),
    ],
)
def test_malformed_requests_get_a_json_4xx(server, path, body, status):
    kwargs = (
        {"content": body, "headers": {"content-type": "application/json"}}
        if isinstance(body, bytes)
        else {"json": body}
    )
    response = httpx.post(f"{server}{path}", timeout=60, **kwargs)
    assert response.status_code == status
    assert "message" in response.json()["error"]


def test_oversized_max_tokens_is_clamped(server):
    body = {"messages": [{"role": "user", "content": "浙江的省会是哪里？"}], "temperature": 0, "max_tokens": 100_000}
    response = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "杭州"


def test_a_client_leaving_mid_stream_leaves_the_server_healthy(server):
    # A sampling stream can run to the length limit; dropping it early must not break the server.
    body = {"messages": [{"role": "user", "content": "把37写成汉字。"}], "temperature": 1.5, "stream": True}
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", f"{server}/v1/chat/completions", json=body) as response:
            next(response.iter_lines())
    assert httpx.get(f"{server}/health").status_code == 200


def test_web_page_shows_a_streamed_answer(server, tmp_path):
    need_chromium()
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    dom = page_dom(
        f"{server}/?q=浙江的省会是哪里？", tmp_path / "profile", 'data-done="true"', artifacts / "web_chat.png"
    )
    assert 'data-done="true"' in dom and ">杭州</div>" in dom, dom[-2000:]
    assert (artifacts / "web_chat.png").stat().st_size > 5000


def test_closing_a_stream_stops_its_generation(tiny_model_dir):
    """The server's worker: once the consumer of a stream goes away, generation stops at the next token."""
    import asyncio

    from sccl_hf.apps.serve import ModelWorker
    from sccl_hf.engine import Engine
    from sccl_hf.model import load_model, load_tokenizer

    model, tokenizer = load_model(tiny_model_dir).eval(), load_tokenizer(tiny_model_dir)
    decoder_steps = 0
    original_forward = model.forward

    def counting_forward(*args, **kwargs):
        nonlocal decoder_steps
        decoder_steps += 1
        return original_forward(*args, **kwargs)

    model.forward = counting_forward
    worker = ModelWorker(Engine(model, tokenizer), "greedy", workers=1)

    async def read_one_piece_then_leave():
        stream = worker.stream("把37写成汉字。", 60, search_type="sampling", min_new_tokens=60, temperature=2.0)
        async for item in stream:
            if isinstance(item, str):
                break
        await stream.aclose()
        # One worker: this runs once the abandoned generation has ended. The loop stays up meanwhile, as in the
        # server, so only the cancellation can end it early.
        done = worker.executor.submit(lambda: None)
        await asyncio.get_running_loop().run_in_executor(None, done.result, 60)

    asyncio.run(read_one_piece_then_leave())
    assert decoder_steps < 20  # a full answer takes 60 decoder steps
    worker.executor.shutdown()


def test_frequency_and_presence_penalties_reach_generation(server, answering_model_dir):
    from sccl_hf.apps.serve import repetition_controls
    from sccl_hf.engine import Engine

    assert repetition_controls(0, 0) == {} and repetition_controls(-1, -1) == {}
    assert repetition_controls(2, 1) == {"no_repeat_ngram_size": 2, "repetition_penalty": 1.5}
    from helpers.answering import SERVE_PENALTIES

    controls = repetition_controls(SERVE_PENALTIES["frequency_penalty"], SERVE_PENALTIES["presence_penalty"])
    # The oracle: transformers' generate with the settings the penalties map to, on a model whose answers repeat
    # words; the server's answer must be that one, and not the answer it gives without them.
    engine = Engine.load(answering_model_dir, "cpu")
    question = "十二加三等于多少？"
    batch = engine.tokenizer([question], return_tensors="pt")

    def generated(**settings) -> str:
        output = engine.model.generate(**batch, max_new_tokens=30, do_sample=False, num_beams=1, **settings)
        return engine.tokenizer.decode(output[0], skip_special_tokens=True).strip()

    expected, plain = generated(**controls), generated()
    assert expected != plain
    with LocalServer(answering_model_dir) as answering:
        client = OpenAI(base_url=f"{answering.url}/v1", api_key="unused")
        asked = dict(model="any", messages=[{"role": "user", "content": question}], temperature=0, max_tokens=30)
        completion = client.chat.completions.create(**asked, **SERVE_PENALTIES)
        assert completion.choices[0].message.content == expected
        assert client.chat.completions.create(**asked).choices[0].message.content == plain
    bad = httpx.post(f"{server}/v1/chat/completions", json={"messages": [{"role": "user", "content": "你好"}],
                                                            "presence_penalty": 3})  # fmt: skip
    assert bad.status_code == 400 and "presence_penalty" in bad.text
