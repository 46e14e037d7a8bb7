"""`sccl serve --model DIR`: an HTTP API (FastAPI + uvicorn) and a web chat page for a saved model.

- `POST /api/chat` {"input_txt": ...} -> {"response": ...}, as ChatLM-mini-Chinese's api_demo.
- `POST /v1/chat/completions` (OpenAI-compatible, with server-sent-event streaming), `GET /v1/models`,
  `GET /health`, the chat page at `/`, and `/docs` with `/openapi.json` (behind the key when there is one).

Greedy and sampling requests share one decoding loop (`sccl_hf/batching.py`, `--batch-size` rows at most): a
request joins the running batch between two decoding steps and leaves it when its answer ends or its client goes
away. On the CTranslate2 engine (`--engine ct2`), the requests waiting when a batch starts are decoded together,
`--workers` batches at once. Beam and contrastive search and `--batch-size 1` run each answer on its own in a
pool of `--workers` threads. Nothing runs on the event loop (rendering and tokenizing the prompt included), and
`/health` answers meanwhile. A client that goes away, streaming or not, stops its
generation at the next decoding step. Bad requests get OpenAI's error shape with a 4xx, never a traceback;
request bodies are capped (chunked ones too) and must arrive in time, and so must request headers.
"""

import argparse
import asyncio
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from sccl_hf.model_folder import existing_model_folder, resolve_model_argument
from sccl_hf.prompt import PromptError, render_prompt

MAX_BODY_BYTES = 1_000_000
GREEDY_BELOW = 1e-4  # a temperature this close to 0 is greedy decoding (dividing logits by it overflows)


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None):
        self.status, self.message, self.kind, self.param = status, message, kind, param


def error_body(status: int, message: str, kind: str, param: str | None = None) -> dict:
    """OpenAI's error shape."""
    codes = {400: "invalid_value", 401: "invalid_api_key", 408: "timeout", 413: "request_too_large"}
    return {"error": {"message": message, "type": kind, "param": param, "code": codes.get(status, str(status))}}


def _encodable(text: str | None, field: str) -> str | None:
    """Text that UTF-8 can encode: JSON allows lone surrogates ("\\ud800"), a tokenizer does not."""
    if text is not None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(f"{field} holds a lone surrogate at character {error.start}") from None
    return text


class StrictJSON(BaseModel):
    """A request body whose values have the JSON types the API names: pydantic's lax mode would take
    `"max_tokens": true` as 1 and `"stream": "yes"` as true; OpenAI answers both with 400, and so do we."""

    model_config = ConfigDict(strict=True)


class ChatRequest(StrictJSON):
    input_txt: str

    @field_validator("input_txt")
    @classmethod
    def utf8(cls, value):
        return _encodable(value, "input_txt")


class ContentPart(StrictJSON):
    type: str
    text: str | None = None

    @field_validator("text")
    @classmethod
    def utf8(cls, value):
        return _encodable(value, "text")


class Message(StrictJSON):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None

    @field_validator("content")
    @classmethod
    def utf8(cls, value):
        return _encodable(value, "content") if isinstance(value, str) else value


class CompletionRequest(StrictJSON):
    messages: list[Message] = Field(min_length=1)
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2, allow_inf_nan=False)
    top_p: float = Field(default=1.0, gt=0, le=1, allow_inf_nan=False)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2, allow_inf_nan=False)
    presence_penalty: float = Field(default=0.0, ge=-2, le=2, allow_inf_nan=False)
    stop: str | list[str] | None = Field(default=None)
    stream: bool = False
    n: int = 1

    @field_validator("stop")
    @classmethod
    def stops(cls, value):
        stops = [value] if isinstance(value, str) else (value or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop: up to 4 non-empty strings")
        return [_encodable(s, "stop") for s in stops]


def repetition_controls(frequency: float, presence: float) -> dict:
    """OpenAI's frequency and presence penalties as transformers' generation settings (see ModelWorker.settings)."""
    controls = {}
    if presence > 0:
        controls["repetition_penalty"] = 1 + presence / 2
    if frequency > 0:
        controls["no_repeat_ngram_size"] = max(2, 5 - round(frequency * 1.5))
    return controls


def conversation_prompt(messages: list[Message], fits) -> str:
    """The encoder text of a conversation, through the project's one prompt renderer (oldest turns dropped
    first when it is too long). Content parts are joined by their text."""
    plain = []
    for message in messages:
        content = message.content
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(part.text or "" for part in content if part.type == "text")
        if message.role in ("system", "developer"):
            plain.append({"role": "system", "content": content or ""})
        elif message.role in ("user", "assistant"):
            plain.append({"role": message.role, "content": content or ""})
    if not any(m["role"] == "user" for m in plain):
        raise APIError(400, "messages: no message with role 'user'", param="messages")
    while plain and plain[-1]["role"] != "user":  # answer the last question asked
        plain.pop()
    try:
        return render_prompt(plain, fits)
    except PromptError as error:
        raise APIError(400, str(error), param="messages") from error


class StopSequences:
    """Cuts generated text at the first stop sequence. Text that might be the start of a stop sequence is held
    back until the next piece shows whether it is."""

    def __init__(self, stops: list[str]):
        self.stops, self.text, self.sent, self.hit = stops, "", 0, False

    def feed(self, piece: str) -> str:
        """The text that is now safe to send."""
        self.text += piece
        if not self.stops:
            return self._send(len(self.text))
        found = [i for i in (self.text.find(s) for s in self.stops) if i >= 0]
        if found:
            self.hit = True
            return self._send(min(found))
        hold = max(len(s) for s in self.stops) - 1
        return self._send(max(self.sent, len(self.text) - hold))

    def flush(self) -> str:
        return "" if self.hit else self._send(len(self.text))

    def _send(self, end: int) -> str:
        piece, self.sent = self.text[self.sent : end], max(self.sent, end)
        return piece


class ModelWorker:
    """Runs generations in worker threads and hands their text to the event loop."""

    def __init__(self, engine, search_type: str, workers: int, batch_size: int = 1):
        from sccl_hf.engine import Engine

        self.engine, self.search_type = engine, search_type
        self.max_seq_len = engine.max_len
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="generate")
        self.batcher = None
        if batch_size > 1:
            from sccl_hf.batching import BatchedGenerator
            from sccl_hf.ct2 import CT2BatchedGenerator

            if isinstance(engine, Engine):
                self.batcher = BatchedGenerator(engine.model, engine.tokenizer, engine.max_len, batch_size)
            else:  # CTranslate2: the requests waiting when a batch starts are decoded together
                self.batcher = CT2BatchedGenerator(engine, batch_size)
            # each batched request waits for its answer in a thread of its own (the decoding loop does the work)
            self.waiters = ThreadPoolExecutor(max_workers=batch_size, thread_name_prefix="batched")
        self.preparer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prepare")  # tokenizing, off the loop
        self.running, self._running_lock = 0, threading.Lock()  # generations in progress (for /health)

    async def off_loop(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.preparer, function, *args)

    def fits(self, prompt: str) -> bool:
        return self.engine.prompt_tokens(prompt) <= self.max_seq_len

    def check_prompt(self, prompt: str, param: str = "messages") -> None:
        if not prompt.strip():
            raise APIError(400, "the prompt is empty", param=param)
        length = self.engine.prompt_tokens(prompt)
        if length > self.max_seq_len:
            raise APIError(
                400, f"the prompt is {length} tokens long; this model takes at most {self.max_seq_len}", param=param
            )

    def settings(
        self, temperature: float | None = None, top_p: float | None = None, frequency: float = 0, presence: float = 0
    ) -> dict:
        """OpenAI semantics: temperature 0 (or close to it) is greedy; otherwise sampling at that temperature.
        The penalties map onto transformers' repetition controls: a positive presence penalty is a
        `repetition_penalty` of 1 + penalty / 2 (every token already in the answer is made less likely, as
        presence does); a positive frequency penalty blocks repeated n-grams, from 4-grams at 0.5 down to
        2-grams at 2 (transformers has no count-based penalty). Zero or negative: no control."""
        if temperature is None:
            settings = {"search_type": self.search_type}
        elif temperature < GREEDY_BELOW:
            settings = {"search_type": "greedy"}
        else:
            settings = {"search_type": "sampling", "temperature": temperature, "top_p": top_p}
        settings = {**settings, **repetition_controls(frequency, presence)}
        if hasattr(self.batcher, "options"):  # CTranslate2: a setting it cannot honour is the client's error
            try:
                self.batcher.options(settings)
            except ValueError as error:
                raise APIError(400, str(error)) from error
        return settings

    async def stream(self, prompt: str, max_new_tokens: int, cancelled: threading.Event | None = None, **settings):
        """Yield text pieces as they are generated, then the finished `Generation` (None when cancelled, the
        exception when generation failed)."""
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        cancelled = cancelled or threading.Event()

        from sccl_hf.engine import GenerationCancelled

        def run():
            with self._running_lock:
                self.running += 1
            try:
                generate = self.batcher.submit if batched else self.engine.stream
                result = generate(
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
            finally:
                with self._running_lock:
                    self.running -= 1
            loop.call_soon_threadsafe(queue.put_nowait, result)

        batched = self.batcher is not None and settings.get("search_type") in ("greedy", "sampling")
        (self.waiters if batched else self.executor).submit(run)
        try:
            while True:
                item = await queue.get()
                yield item
                if not isinstance(item, str):
                    return
        finally:
            cancelled.set()  # the consumer is gone (or done): stop generating at the next token

    async def answer(self, request: Request, prompt: str, max_new_tokens: int, stops=(), **settings):
        """A whole answer, stopped early when the client disconnects (checked while it is generated)."""
        cancelled = threading.Event()
        watcher = asyncio.create_task(_watch_disconnect(request, cancelled))
        cut = StopSequences(list(stops or []))
        text = ""
        try:
            async for item in self.stream(prompt, max_new_tokens, cancelled, **settings):
                if isinstance(item, str):
                    text += cut.feed(item)
                    if cut.hit:
                        cancelled.set()
                elif isinstance(item, Exception):
                    raise APIError(500, f"generation failed: {item}", "server_error")
                elif item is None and not cut.hit:
                    raise APIError(499, "the client went away", "client_closed")
                else:
                    result = item or _cut_result(text, prompt, self.engine)
                    result.text = text + cut.flush()
                    result.finish_reason = "stop" if cut.hit else result.finish_reason
                    return result
        finally:
            watcher.cancel()


def _cut_result(text, prompt, engine):
    """The Generation of an answer stopped at a stop sequence (its generation was cancelled)."""
    from sccl_hf.engine import Generation

    return Generation(text, len(engine.tokenizer(text)["input_ids"]), "stop", engine.prompt_tokens(prompt))


async def _watch_disconnect(request: Request, cancelled: threading.Event) -> None:
    """Set `cancelled` when the client disconnects (the request body is read: the next message is the end)."""
    while not cancelled.is_set():
        message = await request.receive()
        if message["type"] == "http.disconnect":
            cancelled.set()
            return


class RequestBodyGuard:
    """ASGI middleware for request bodies, the one place their limits live.

    - A body that declares a length over `limit` is refused at once with 413 and the connection is closed, so the
      server does not read (and discard) the rest of it; a chunked body is counted as it arrives and refused with
      413 when it passes `limit`. (FastAPI's own `max_body_size` answers a declared length with a plain-text 413
      that replaces ours, and older releases, 0.110 among them, take the argument into `**extra` and check nothing.)
    - A body must be JSON in UTF-8 (RFC 8259, section 8.1): Python's `json.loads` would also decode UTF-16 and
      UTF-32 bodies, which no OpenAI client sends, so they get 400.
    - A body that does not arrive within `timeout` seconds gets 408.
    Each error is raised as an HTTPException from `receive`, so the route's error handler answers in OpenAI's
    shape."""

    def __init__(self, app, limit: int, timeout: float):
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > self.limit:
            body = json.dumps(error_body(413, f"request body over {self.limit} bytes", "invalid_request_error"))
            headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
            await send({"type": "http.response.start", "status": 413, "headers": headers})
            return await send({"type": "http.response.body", "body": body.encode()})
        body_done, received, start = False, 0, b""

        async def checked_receive():
            nonlocal body_done, received, start
            if body_done:  # after the body: the next message is a disconnect, which may take any time
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                raise HTTPException(408, f"the request body did not arrive within {self.timeout:g} s") from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            chunk = message.get("body", b"") if message["type"] == "http.request" else b""
            received += len(chunk)
            if received > self.limit:
                raise HTTPException(413, f"request body over {self.limit} bytes")
            if len(start) < 4 and chunk:
                start += chunk[: 4 - len(start)]
                # json.detect_encoding reads the first 4 bytes (a BOM, or where the zero bytes of UTF-16/32 fall)
                if (len(start) == 4 or body_done) and json.detect_encoding(start) != "utf-8":
                    raise HTTPException(400, "the request body must be JSON in UTF-8 (RFC 8259)")
            return message

        await self.app(scope, checked_receive, send)


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for request headers: uvicorn times out idle kept-alive
    connections, but not a client that sends its headers slowly (or never), which would hold a connection
    forever. The connection is closed when a request's headers have not all arrived `header_timeout` seconds
    after its first bytes (or after the connection opened)."""

    header_timeout = 10.0

    def connection_made(self, transport):
        super().connection_made(transport)
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def data_received(self, data: bytes) -> None:
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and getattr(self, "_header_deadline", None) is None:
            self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)
        super().data_received(data)
        if self.cycle is not None and not self.cycle.response_complete and self._header_deadline is not None:
            self._header_deadline.cancel()  # the headers are in: a request is being handled
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()

    def connection_lost(self, exc):
        if getattr(self, "_header_deadline", None) is not None:
            self._header_deadline.cancel()
        super().connection_lost(exc)


def create_app(
    model_dir: str | Path,
    api_key: str | None = None,
    search_type: str = "greedy",
    workers: int = 2,
    device: str = "auto",
    body_timeout: float = 30.0,
    engine_name: str = "torch",
    batch_size: int = 16,
) -> FastAPI:
    import torch

    from sccl_hf.engine import load_engine

    engine = load_engine(model_dir, device, engine_name, lanes=workers)  # ct2: `workers` batches decode at once
    batching = batch_size > 1 and search_type in ("greedy", "sampling")
    if engine.device_type == "cpu" and engine_name == "torch" and not batching:
        # Workers share the cores: each generation gets its share of threads instead of all of them competing.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    elif engine.device_type == "cpu" and batching:
        # One decoding loop: every core but one, which the event loop needs for the streams (SSE, JSON, tokenizing).
        # On 2 cores, 8 clients: 1,543 tokens/s with 1 thread against 1,317 with 2 (benchmarks/bench_serving.py).
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - 1))
    worker = ModelWorker(engine, search_type, workers, batch_size if batching else 1)
    model_name = Path(model_dir).resolve().name
    # /docs and /openapi.json are routes of our own below, so that the API key guards them too.
    app = FastAPI(
        title="sccl-hf",
        description=f"serving {model_name}",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(RequestBodyGuard, limit=MAX_BODY_BYTES, timeout=body_timeout)
    app.state.worker = worker

    def error_response(status: int, message: str, kind: str, param: str | None = None) -> JSONResponse:
        return JSONResponse(error_body(status, message, kind, param), status_code=status)

    @app.exception_handler(APIError)
    async def api_error(request, error: APIError):
        return error_response(error.status, error.message, error.kind, error.param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, error: StarletteHTTPException):
        return error_response(error.status_code, str(error.detail), "invalid_request_error")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, error: RequestValidationError):
        problems = error.errors()
        param = ".".join(str(p) for p in problems[0]["loc"][1:]) if problems else None
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg'].removeprefix('Value error, ')}"
            for e in problems
        )
        return error_response(400, details or "invalid request", "invalid_request_error", param or None)

    @app.exception_handler(Exception)
    async def unexpected_error(request, error: Exception):
        return error_response(500, f"internal error: {type(error).__name__}", "server_error")

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        # Compare bytes: header values arrive as Latin-1 text, so a UTF-8 key must be compared as UTF-8 bytes.
        header = dict(request.scope["headers"]).get(b"authorization", b"")
        token = header[7:] if header[:7].lower() == b"bearer " else b""
        if not hmac.compare_digest(token, api_key.encode("utf-8")):  # constant time
            raise APIError(401, "missing or wrong API key (Authorization: Bearer KEY)", "authentication_error")

    @app.get("/health")
    async def health():
        batcher = worker.batcher
        return {
            "status": "ok",
            "model": model_name,
            "engine": getattr(worker.engine, "description", engine_name),
            "generations_running": worker.running,
            # batched decoding's work so far: CTranslate2 batches run, or the torch loop's decoding steps
            "batches": getattr(batcher, "batches", None),
            "decoding_steps": getattr(batcher, "steps", None),
        }

    @app.get("/", response_class=HTMLResponse)
    async def chat_page():
        return resources.files("sccl_hf.apps").joinpath("web/chat.html").read_text(encoding="utf-8")

    @app.get("/openapi.json", dependencies=[Depends(authorize)], include_in_schema=False)
    async def openapi():
        return app.openapi()

    @app.get("/docs", dependencies=[Depends(authorize)], include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="sccl-hf API")

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "sccl-hf"}]}

    @app.post("/api/chat", dependencies=[Depends(authorize)])
    async def api_chat(request: Request, body: ChatRequest):
        await worker.off_loop(worker.check_prompt, body.input_txt, "input_txt")
        result = await worker.answer(request, body.input_txt, worker.max_seq_len, **worker.settings())
        return {"response": result.text}

    def prepare(body: CompletionRequest) -> str:
        prompt = conversation_prompt(body.messages, worker.fits)
        worker.check_prompt(prompt)
        return prompt

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat_completions(request: Request, body: CompletionRequest):
        if body.n != 1:
            raise APIError(400, "n: only n=1 is supported", param="n")
        prompt = await worker.off_loop(prepare, body)
        # An oversized max_tokens is clamped to what the model was trained for.
        max_new_tokens = min(body.max_completion_tokens or body.max_tokens or worker.max_seq_len, worker.max_seq_len)
        settings = worker.settings(body.temperature, body.top_p, body.frequency_penalty, body.presence_penalty)
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        base = {"id": completion_id, "created": created, "model": model_name}

        if not body.stream:
            result = await worker.answer(request, prompt, max_new_tokens, body.stop, **settings)
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
                "usage": _usage(result),
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
            cancelled, cut = threading.Event(), StopSequences(body.stop or [])
            async for item in worker.stream(prompt, max_new_tokens, cancelled, **settings):
                if isinstance(item, str):
                    piece = cut.feed(item)
                    if piece:
                        yield event({"content": piece})
                    if cut.hit:
                        cancelled.set()
                elif isinstance(item, Exception):
                    error = error_body(500, f"generation failed: {item}", "server_error")
                    yield f"data: {json.dumps(error, ensure_ascii=False)}\n\n"
                elif item is not None or cut.hit:
                    if piece := cut.flush():
                        yield event({"content": piece})
                    finish = "stop" if cut.hit else item.finish_reason
                    yield event({}, finish, **({"usage": _usage(item)} if item is not None else {}))
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


def _usage(result) -> dict:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


class LocalServer:
    """`sccl serve` in a child process on a free 127.0.0.1 port (the demo, tests and benchmarks use it).

    `with LocalServer(model_dir, "--api-key", KEY) as server: httpx.get(server.url + "/health")`"""

    def __init__(self, model_dir: str | Path, *args: str, timeout: float = 120):

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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="sccl serve", description="serve a saved model over HTTP")
    parser.add_argument(
        "--model", required=True, type=existing_model_folder, help="a model folder, or a hub id (user/model)"
    )
    parser.add_argument("--hub", choices=["hf", "modelscope"], default="hf", help="the hub of a user/model id")
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
        type=_positive_int,
        default=min(4, os.cpu_count() or 1),
        help="answers (ct2: batches) generated at once; later ones wait (default: cores, at most 4)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=16,
        help="greedy and sampling requests decoded together, joining and leaving between steps (1: one at a time)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--engine",
        choices=["torch", "ct2"],
        default="torch",
        help="ct2: CTranslate2, int8 on CPU (a model folder is converted once into <folder>/.ct2)",
    )
    parser.add_argument("--header-timeout", type=float, default=10.0, help="seconds for a request's headers")
    parser.add_argument("--body-timeout", type=float, default=30.0, help="seconds for a request's body")
    args = parser.parse_args(argv)
    args.model = resolve_model_argument(parser, args.model, args.hub)
    app = create_app(
        args.model,
        args.api_key,
        args.search_type,
        args.workers,
        args.device,
        args.body_timeout,
        args.engine,
        args.batch_size,
    )
    HeaderTimeoutProtocol.header_timeout = args.header_timeout
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", http=HeaderTimeoutProtocol)
