"""A hostile client against a real `sccl serve` on 127.0.0.1 (issue 9, items 15-19)."""

import json
import shutil
import socket
import statistics
import subprocess
import sys
import time

import httpx
import pytest
import torch

from conftest import ROOT, need_chromium, page_dom
from sccl_hf.apps.serve import LocalServer

pytestmark = pytest.mark.slow
COMPLETIONS = "/v1/chat/completions"
KEY = "密钥-ключ-🔑"


def ask(question: str, **fields) -> dict:
    return {"messages": [{"role": "user", "content": question}], **fields}


@pytest.fixture(scope="module")
def server(trained_model_dir):
    with LocalServer(trained_model_dir, "--header-timeout", "1", "--body-timeout", "1") as local:
        yield local.url


@pytest.fixture(scope="module")
def long_answer_server(tmp_path_factory, tokenizer_dir):
    """A random tiny model allowed 512 new tokens that never says [EOS]: its answers run to the limit."""
    from transformers import set_seed

    from sccl_hf.model import build_config, load_tokenizer, new_model, save_model_dir

    set_seed(0)
    tokenizer = load_tokenizer(tokenizer_dir)
    model = new_model(build_config("tiny", tokenizer, max_seq_len=512))
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] = 0  # logit 0, below the best of 600 random logits
    folder = save_model_dir(model, tokenizer, tmp_path_factory.mktemp("long"))
    with LocalServer(folder, "--workers", "1") as local:
        yield local.url


# 15 -----------------------------------------------------------------------------------------------------------
def test_15_the_body_limit_holds_for_chunked_requests(server):
    def chunks():
        for _ in range(40):
            yield b"x" * 65536  # 2.6 MB in all, with no Content-Length

    response = httpx.post(f"{server}{COMPLETIONS}", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("size", [30_000_000, 900_000], ids=["30 MB rejected", "0.9 MB processed"])
def test_15_health_answers_while_a_huge_prompt_is_handled(server, size, tmp_path):
    body = tmp_path / "body.json"
    body.write_text(json.dumps(ask("问" * (size // 3)), ensure_ascii=False), encoding="utf-8")
    # The upload runs in another process, so that this one measures only the server's answers.
    upload = subprocess.Popen(
        [sys.executable, "-c", "import httpx, sys\n"
         "try:\n    r = httpx.post(sys.argv[1], content=open(sys.argv[2], 'rb').read(), timeout=120,"
         " headers={'content-type': 'application/json'}); print(r.status_code)\n"
         "except httpx.HTTPError as error:\n    print(type(error).__name__)",
         f"{server}{COMPLETIONS}", str(body)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    latencies = []
    while upload.poll() is None and len(latencies) < 200:
        started = time.perf_counter()
        assert httpx.get(f"{server}/health", timeout=5).status_code == 200
        latencies.append(time.perf_counter() - started)
    status = upload.communicate(timeout=120)[0].strip()
    assert latencies and statistics.median(latencies) < 0.1 and max(latencies) < 0.5, latencies
    expected = {"413", "RemoteProtocolError", "WriteError", "ReadError"} if size > 1_000_000 else {"400"}
    assert status in expected, status


def test_15_a_prompt_over_the_input_limit_says_its_length_and_the_limit(server):
    response = httpx.post(f"{server}{COMPLETIONS}", json=ask("很长的问题" * 100), timeout=60)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "tokens long; this model takes at most 32" in message and message.split()[3].isdigit()


# 16 -----------------------------------------------------------------------------------------------------------
def running(url) -> int:
    return httpx.get(f"{url}/health", timeout=5).json()["generations_running"]


@pytest.mark.parametrize("stream", [False, True], ids=["non-streaming", "streaming"])
def test_16_a_client_that_disconnects_stops_its_generation(long_answer_server, stream):
    url = long_answer_server
    started = time.perf_counter()
    full = httpx.post(f"{url}{COMPLETIONS}", json=ask("随便说点什么", temperature=0, max_tokens=512), timeout=300)
    full_seconds = time.perf_counter() - started
    assert full.json()["choices"][0]["finish_reason"] == "length"  # 512 decoding steps: a meaningful baseline

    body = json.dumps(ask("随便说点什么", temperature=0, max_tokens=512, stream=stream)).encode()
    port = int(url.rsplit(":", 1)[1])
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(
        f"POST {COMPLETIONS} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    deadline = time.monotonic() + 30
    while running(url) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    client.close()  # the client goes away mid-answer
    left = time.perf_counter()
    while running(url) and time.perf_counter() - left < full_seconds:
        time.sleep(0.01)
    stopped_after = time.perf_counter() - left
    assert running(url) == 0
    assert stopped_after < min(1.0, full_seconds / 4), (stopped_after, full_seconds)


# 17 -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"messages": [{"role": "user", "content": "\\ud800 lone"}]}', "messages.0.content"),
        (b'{"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}', "messages.0.content"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', "temperature"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": Infinity}', "temperature"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "top_p": 0}', "top_p"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "top_p": 1.5}', "top_p"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', "max_tokens"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}', "max_tokens"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "stop": ["", "x"]}', "stop"),
        (b'{"input_txt": "\\udfff"}', "input_txt"),
        # JSON types as the API names them (pydantic's lax mode took `true` as 1 and "yes" as true)
        (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": true}', "max_tokens"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "stream"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "0.5"}', "temperature"),
        (b'{"messages": [{"role": "user", "content": "hi"}], "n": 1.0}', "n"),
    ],
)
def test_17_bad_fields_are_400s_in_openais_error_shape(server, body, param):
    path = "/api/chat" if b"input_txt" in body else COMPLETIONS
    response = httpx.post(f"{server}{path}", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"].startswith(param)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_17_a_body_not_in_utf8_is_a_400_in_openais_error_shape(server, encoding):
    """JSON travels in UTF-8 (RFC 8259); Python's json.loads would decode UTF-16 and UTF-32 bodies too."""
    body = json.dumps(ask("你好", max_tokens=2), ensure_ascii=False)
    plain = httpx.post(f"{server}{COMPLETIONS}", content=body.encode(), timeout=60,
                       headers={"content-type": "application/json"})  # fmt: skip
    assert plain.status_code == 200, plain.text  # the same request in UTF-8 is answered
    response = httpx.post(f"{server}{COMPLETIONS}", content=body.encode(encoding), timeout=60,
                          headers={"content-type": "application/json"})  # fmt: skip
    assert response.status_code == 400, response.text
    assert response.json()["error"] == {"message": "the request body must be JSON in UTF-8 (RFC 8259)",
                                        "type": "invalid_request_error", "param": None, "code": "invalid_value"}  # fmt: skip


@pytest.mark.parametrize("declared", ["1000001", "30000000", " 2000000"])
def test_15_a_body_declared_too_large_gets_a_json_413_before_it_is_sent(server, declared):
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(f"POST {COMPLETIONS} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {declared}\r\n\r\n".encode())  # fmt: skip
        reply = b""
        while chunk := client.recv(65536):  # the server answers without the body and closes the connection
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"content-type: application/json" in head.lower(), reply
    if b"transfer-encoding: chunked" in head.lower():
        body = b"".join(body.split(b"\r\n")[1::2])
    error = json.loads(body)["error"]
    assert error["code"] == "request_too_large" and error["type"] == "invalid_request_error", error


def test_17_a_temperature_near_zero_is_greedy(server):
    for temperature in (1e-9, 0):
        response = httpx.post(
            f"{server}{COMPLETIONS}", json=ask("浙江的省会是哪里？", temperature=temperature), timeout=60
        )
        assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "杭州"


@pytest.mark.parametrize("stream", [False, True], ids=["non-streaming", "streaming"])
def test_17_stop_sequences_are_honoured(server, stream):
    body = ask("把37写成汉字。", temperature=0, stop=["十"], stream=stream)
    full = httpx.post(f"{server}{COMPLETIONS}", json=ask("把37写成汉字。", temperature=0), timeout=60)
    assert full.json()["choices"][0]["message"]["content"] == "三十七"
    if not stream:
        choice = httpx.post(f"{server}{COMPLETIONS}", json=body, timeout=60).json()["choices"][0]
        assert (choice["message"]["content"], choice["finish_reason"]) == ("三", "stop")
        return
    text, finish = "", None
    with httpx.stream("POST", f"{server}{COMPLETIONS}", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                choice = json.loads(line[6:])["choices"][0]
                text += choice["delta"].get("content") or ""
                finish = choice["finish_reason"] or finish
    assert (text, finish) == ("三", "stop")


# 18 -----------------------------------------------------------------------------------------------------------
def test_18_a_non_ascii_key_works_and_guards_the_docs(trained_model_dir):
    with LocalServer(trained_model_dir, "--api-key", KEY) as local:
        right = {"Authorization": f"Bearer {KEY}".encode()}
        wrong = {"Authorization": "Bearer 密钥".encode()}
        answer = httpx.post(f"{local.url}/api/chat", json={"input_txt": "3加5等于多少？"}, headers=right, timeout=60)
        assert answer.status_code == 200 and answer.json() == {"response": "8"}
        assert httpx.post(f"{local.url}/api/chat", json={"input_txt": "3加5"}, headers=wrong).status_code == 401
        for path in ("/docs", "/openapi.json"):
            assert httpx.get(f"{local.url}{path}").status_code == 401
            assert httpx.get(f"{local.url}{path}", headers=right).status_code == 200
        assert "/v1/chat/completions" in httpx.get(f"{local.url}/openapi.json", headers=right).json()["paths"]


def test_18_slow_headers_and_slow_bodies_time_out(server):
    port = int(server.rsplit(":", 1)[1])
    slow_headers = socket.create_connection(("127.0.0.1", port))
    slow_headers.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # ... and never the rest
    slow_headers.settimeout(10)
    started = time.monotonic()
    assert slow_headers.recv(1024) == b""  # closed by the server
    assert time.monotonic() - started < 5
    slow_body = socket.create_connection(("127.0.0.1", port))
    slow_body.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"messages\"")  # fmt: skip
    slow_body.settimeout(10)
    reply = b""
    while b'"code"' not in reply and (chunk := slow_body.recv(4096)):
        reply += chunk
    reply = reply.decode()
    assert reply.startswith("HTTP/1.1 408") and '"code":"timeout"' in reply.replace(" ", "")


# 19 -----------------------------------------------------------------------------------------------------------
def test_19_the_web_page_shows_an_error_that_arrives_in_the_stream(trained_model_dir, tmp_path):
    """A model whose weights went bad (NaN): sampling fails after the stream has started."""
    need_chromium()
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken_model"
    shutil.copytree(trained_model_dir, broken)
    weights = load_file(broken / "model.safetensors")
    save_file({k: torch.full_like(v, float("nan")) for k, v in weights.items()}, broken / "model.safetensors",
              metadata={"format": "pt"})  # fmt: skip
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with LocalServer(broken) as local:
        url = f"{local.url}/?q=你好&temperature=1"
        dom = page_dom(url, tmp_path / "profile", 'data-error="true"', artifacts / "web_chat_error.png")
    assert 'data-error="true"' in dom and "error: generation failed" in dom, dom[-2000:]
