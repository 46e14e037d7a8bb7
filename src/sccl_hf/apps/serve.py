"""`sccl serve --model DIR`: an HTTP API (FastAPI + uvicorn) and a web chat page for a saved model.

- `POST /api/chat` {"input_txt": ...} -> {"response": ...}, as ChatLM-mini-Chinese's api_demo.
- `POST /v1/chat/completions` (OpenAI-compatible, with server-sent-event streaming), `GET /v1/models`,
  `GET /health`, and the chat page at `/`.

Generation runs in a pool of worker threads, never on the event loop: up to `--workers` answers are generated
at once, later requests wait their turn, and one client's stream never waits on another's. A client that goes
away mid-stream stops its generation at the next token.
"""

import argparse
import asyncio
import hmac
import json
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Literal

import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from sccl_hf.engine import Engine, GenerationCancelled
from sccl_hf.prompt import PromptError, render_prompt

MAX_BODY_BYTES = 1_000_000


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error"):
        self.status, self.message, self.kind = status, message, kind


class ChatRequest(BaseModel):
    input_txt: str


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict] | None = None


class CompletionRequest(BaseModel):
    messages: list[Message] = Field(min_length=1)
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    stream: bool = False
    n: int = 1


def conversation_prompt(messages: list[Message], fits) -> str:
    """The encoder text of a conversation, through the project's one prompt renderer (oldest turns dropped
    first when it is too long). Content parts are joined by their text."""
    plain = []
    for message in messages:
        content = message.content
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(part.get("text", "") for part in content if part.get("type") == "text")
        if message.role in ("system", "developer"):
            plain.append({"role": "system", "content": content or ""})
        elif message.role in ("user", "assistant"):
            plain.append({"role": message.role, "content": content or ""})
    if not any(m["role"] == "user" for m in plain):
        raise APIError(400, "messages: no message with role 'user'")
    while plain and plain[-1]["role"] != "user":  # answer the last question asked
        plain.pop()
    try:
        return render_prompt(plain, fits)
    except PromptError as error:
        raise APIError(400, str(error)) from error


class ModelWorker:
    """Runs generations in worker threads and hands their text to the event loop."""

    def __init__(self, engine: Engine, search_type: str, workers: int):
        self.engine, self.search_type = engine, search_type
        self.max_seq_len = engine.max_len
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="generate")

    def fits(self, prompt: str) -> bool:
        return self.engine.prompt_tokens(prompt) <= self.max_seq_len

    def check_prompt(self, prompt: str) -> None:
        if not prompt.strip():
            raise APIError(400, "the prompt is empty")
        length = self.engine.prompt_tokens(prompt)
        if length > self.max_seq_len:
            raise APIError(
                413, f"the prompt is {length} tokens; this model takes at most {self.max_seq_len}", "prompt_too_long"
            )

    def settings(self, temperature: float | None = None, top_p: float | None = None) -> dict:
        """OpenAI semantics: temperature 0 is greedy; otherwise sampling at that temperature and top_p."""
        if temperature is None:
            return {"search_type": self.search_type}
        if temperature == 0:
            return {"search_type": "greedy"}
        return {"search_type": "sampling", "temperature": temperature, "top_p": top_p}

    async def stream(self, prompt: str, max_new_tokens: int, **settings):
        """Yield text pieces as they are generated, then the finished `Generation`."""
        loop, queue, cancelled = asyncio.get_running_loop(), asyncio.Queue(), threading.Event()

        def run():
            try:
                result = self.engine.stream(
                    prompt,
                    lambda text: loop.call_soon_threadsafe(queue.put_nowait, text),
                    max_new_tokens=max_new_tokens,
                    cancelled=cancelled,
                    **settings,
                )
            except GenerationCancelled:
                result = None
            except Exception as error:  # reported to the client as JSON, never as a traceback
                result = error
            loop.call_soon_threadsafe(queue.put_nowait, result)

        self.executor.submit(run)
        try:
            while True:
                item = await queue.get()
                yield item
                if not isinstance(item, str):
                    return
        finally:
            cancelled.set()  # the consumer is gone (or done): stop generating at the next token

    async def generate(self, prompt: str, max_new_tokens: int, **settings):
        async for item in self.stream(prompt, max_new_tokens, **settings):
            if not isinstance(item, str):
                if isinstance(item, Exception):
                    raise APIError(500, f"generation failed: {item}", "server_error")
                return item


def create_app(
    model_dir: str | Path,
    api_key: str | None = None,
    search_type: str = "greedy",
    workers: int = 2,
    device: str = "auto",
) -> FastAPI:
    engine = Engine.load(model_dir, device)
    if engine.model.device.type == "cpu":
        # Workers share the cores: each generation gets its share of threads instead of all of them competing.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    worker = ModelWorker(engine, search_type, workers)
    model_name = Path(model_dir).resolve().name
    app = FastAPI(title="sccl-hf", description=f"serving {model_name}")

    def error_response(status: int, message: str, kind: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)

    @app.exception_handler(APIError)
    async def api_error(request, error: APIError):
        return error_response(error.status, error.message, error.kind)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, error: RequestValidationError):
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in error.errors())
        return error_response(422, details or "invalid request", "invalid_request_error")

    @app.exception_handler(Exception)
    async def unexpected_error(request, error: Exception):
        return error_response(500, f"internal error: {type(error).__name__}", "server_error")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
            return error_response(413, f"request body over {MAX_BODY_BYTES} bytes", "request_too_large")
        return await call_next(request)

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), api_key.encode()):  # constant time
            raise APIError(401, "missing or wrong API key (Authorization: Bearer KEY)", "authentication_error")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name}

    @app.get("/", response_class=HTMLResponse)
    async def chat_page():
        return resources.files("sccl_hf.apps").joinpath("web/chat.html").read_text(encoding="utf-8")

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "sccl-hf"}]}

    @app.post("/api/chat", dependencies=[Depends(authorize)])
    async def api_chat(body: ChatRequest):
        worker.check_prompt(body.input_txt)
        result = await worker.generate(body.input_txt, worker.max_seq_len, **worker.settings())
        return {"response": result.text if result else ""}

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat_completions(body: CompletionRequest):
        if body.n != 1:
            raise APIError(400, "n: only n=1 is supported")
        prompt = conversation_prompt(body.messages, worker.fits)
        worker.check_prompt(prompt)
        # An oversized max_tokens is clamped to what the model was trained for.
        max_new_tokens = min(body.max_completion_tokens or body.max_tokens or worker.max_seq_len, worker.max_seq_len)
        settings = worker.settings(body.temperature, body.top_p)
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        base = {"id": completion_id, "created": created, "model": model_name}

        if not body.stream:
            result = await worker.generate(prompt, max_new_tokens, **settings)
            return {
                **base,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": result.text},
                        "finish_reason": result.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": result.prompt_tokens,
                    "completion_tokens": result.completion_tokens,
                    "total_tokens": result.prompt_tokens + result.completion_tokens,
                },
            }

        def event(delta: dict, finish_reason=None, **extra) -> str:
            chunk = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                **extra,
            }
            return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

        async def events():
            yield event({"role": "assistant", "content": ""})
            async for item in worker.stream(prompt, max_new_tokens, **settings):
                if isinstance(item, str):
                    yield event({"content": item})
                elif isinstance(item, Exception):
                    yield f"data: {json.dumps({'error': {'message': str(item), 'type': 'server_error'}})}\n\n"
                elif item is not None:
                    usage = {
                        "prompt_tokens": item.prompt_tokens,
                        "completion_tokens": item.completion_tokens,
                        "total_tokens": item.prompt_tokens + item.completion_tokens,
                    }
                    yield event({}, item.finish_reason, usage=usage)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


class LocalServer:
    """`sccl serve` in a child process on a free 127.0.0.1 port (the demo, tests and benchmarks use it).

    `with LocalServer(model_dir, "--api-key", KEY) as server: httpx.get(server.url + "/health")`"""

    def __init__(self, model_dir: str | Path, *args: str, timeout: float = 120):
        import socket
        import subprocess
        import sys
        import tempfile

        import httpx

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.log = tempfile.TemporaryFile(mode="w+")
        command = [
            sys.executable,
            "-c",
            "from sccl_hf.cli import main; main()",
            "serve",
            "--model",
            str(model_dir),
            "--port",
            str(port),
            *args,
        ]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        output = self.stop()
        raise RuntimeError(f"sccl serve did not start within {timeout:.0f} s:\n{output}")

    def stop(self) -> str:
        """Stop the server (Ctrl+C, as a person would) and return everything it printed."""
        import signal
        import subprocess

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.seek(0)
        return self.log.read()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="sccl serve", description="serve a saved model over HTTP")
    parser.add_argument("--model", required=True, help="a saved model directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8812)
    parser.add_argument("--api-key", default=None, help="require Authorization: Bearer KEY (default: open)")
    parser.add_argument(
        "--search-type",
        default="greedy",
        choices=["greedy", "sampling", "beam", "contrastive"],
        help="for /api/chat and requests without a temperature",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="answers generated at once; later ones wait (default: cores, at most 4)",
    )
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    app = create_app(args.model, args.api_key, args.search_type, args.workers, args.device)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
