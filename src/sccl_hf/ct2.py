"""Everything about CTranslate2 in one place: converting a model folder (`convert_to_ct2`, stage export_ct2), the
cache a plain folder gets on first use (`ct2_cache`), the engine (`CT2Engine`, the same interface as
`engine.Engine`) and the batcher for serving (`CT2BatchedGenerator`, the same interface as
`batching.BatchedGenerator`). Imported only when a CTranslate2 engine is asked for."""

import json
import os
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path

from modeling_chat_model import SEARCH_SETTINGS
from sccl_hf.batching import Request, answer_of
from sccl_hf.engine import Generation, GenerationCancelled, IncrementalText, cut_at_stop
from sccl_hf.model import load_tokenizer
from sccl_hf.span_corruption import sentinel_ids

CT2_MARKER = "sccl_ct2.json"  # written by stage export_ct2 beside CTranslate2's own files

# The search types in CTranslate2's terms, from `my_generate`'s settings (modeling_chat_model.SEARCH_SETTINGS, the
# one place they are written). Greedy is exact; beam and sampling use the same beam count, top-k, top-p,
# temperature and n-gram blocking, but CTranslate2's length penalty and stopping rules are its own. Contrastive
# search has no CTranslate2 counterpart.
CT2_OVERRIDES = {"temperature": "sampling_temperature", "top_p": "sampling_topp", "top_k": "sampling_topk",
                 "repetition_penalty": "repetition_penalty", "no_repeat_ngram_size": "no_repeat_ngram_size"}  # fmt: skip
CT2_SEARCH = {
    "greedy": dict(beam_size=1, sampling_topk=1),
    "beam": dict(
        beam_size=SEARCH_SETTINGS["beam"]["num_beams"],
        no_repeat_ngram_size=SEARCH_SETTINGS["beam"]["no_repeat_ngram_size"],
    ),
    "sampling": dict(
        beam_size=1, **{CT2_OVERRIDES[k]: v for k, v in SEARCH_SETTINGS["sampling"].items() if k in CT2_OVERRIDES}
    ),
}


def is_ct2_folder(folder) -> bool:

    return (Path(folder) / CT2_MARKER).is_file()


CT2_CACHE = ".ct2"  # inside a model folder: <quantization>/, one CTranslate2 folder per quantization


def convert_to_ct2(model_dir, output_dir, quantization: str = "int8", weights_sha256: str | None = None) -> dict:
    """Convert a model folder for CTranslate2: `model.bin` and its vocabulary in `output_dir`, with the tokenizer
    and `sccl_ct2.json` (the source, the quantization, max_seq_len, the source's weights fingerprint; pass
    `weights_sha256` when it is already known, so the weights are not read twice)."""

    from ctranslate2.converters import TransformersConverter

    from sccl_hf.model import DEFAULT_MAX_SEQ_LEN
    from sccl_hf.model_folder import weights_fingerprint
    from sccl_hf.tokenization import save_tokenizer

    source, output = Path(model_dir), Path(output_dir)
    # The folder seen as a plain T5 model: CTranslate2's converter picks its loader by config class, and ours
    # (TextToTextModelConfig, remote code) has the same weights and names as T5ForConditionalGeneration.
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    max_seq_len = config.get("max_seq_len") or DEFAULT_MAX_SEQ_LEN
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sccl-ct2-") as plain:
        for path in source.iterdir():
            if path.is_file() and path.name != "config.json":
                (Path(plain) / path.name).symlink_to(path.resolve())
        config.pop("auto_map", None)
        config.update(architectures=["T5ForConditionalGeneration"], model_type="t5")
        (Path(plain) / "config.json").write_text(json.dumps(config), encoding="utf-8")
        TransformersConverter(plain).convert(
            str(output), quantization=None if quantization == "float32" else quantization, force=True
        )
    save_tokenizer(load_tokenizer(source), output)  # prompts are encoded and answers decoded with it
    info = {"source": str(source), "quantization": quantization, "max_seq_len": max_seq_len,
            "weights_sha256": weights_sha256 or weights_fingerprint(source)}  # fmt: skip
    (output / CT2_MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    size = (output / "model.bin").stat().st_size
    return {**info, "model_bin_bytes": size, "seconds": round(time.perf_counter() - started, 2)}


def ct2_cache(model_dir, device: str = "auto") -> str:
    """The CTranslate2 folder for a plain model folder: `<model>/.ct2/<quantization>` (int8 on CPU, float16 on
    GPU), converted on first use and reused while the folder's weights are the ones it was converted from (their
    sha256 is kept in it); says which it did."""

    import ctranslate2

    from sccl_hf.errors import ModelFolderError
    from sccl_hf.model_folder import local_model_dir, weights_fingerprint

    folder = Path(local_model_dir(model_dir))
    if not (folder / "config.json").is_file():
        raise ModelFolderError(f"{model_dir}: neither a model folder (config.json) nor a CTranslate2 folder")
    on_gpu = device.startswith("cuda") or (device == "auto" and ctranslate2.get_cuda_device_count() > 0)
    quantization = "float16" if on_gpu else "int8"
    cache = folder / CT2_CACHE / quantization
    weights = weights_fingerprint(folder)
    if is_ct2_folder(cache):
        info = json.loads((cache / CT2_MARKER).read_text(encoding="utf-8"))
        if info.get("weights_sha256") == weights:
            print(f"ct2: using {cache} ({quantization}, converted from these weights)", file=sys.stderr)
            return str(cache)
        print(f"ct2: the weights in {folder} changed since {cache} was made: converting again", file=sys.stderr)
    try:
        info = convert_to_ct2(folder, cache, quantization, weights_sha256=weights)
    except OSError as error:
        raise ModelFolderError(
            f"{model_dir}: cannot write the CTranslate2 cache {cache} ({error}); convert it elsewhere with "
            f"`sccl run recipes/demo/export_ct2.yaml --model_dir {model_dir} --output_dir DIR`"
        ) from error
    print(f"ct2: converted {folder} to {cache} ({quantization}, {info['seconds']:.1f} s); later runs reuse it",
          file=sys.stderr)  # fmt: skip
    return str(cache)


class CT2Engine:
    """The CTranslate2 backend: the same interface as `Engine` (generate, answer, stream, prompt_tokens)."""

    def __init__(self, translator, tokenizer, max_len: int, description: str):
        self.translator, self.tokenizer, self.max_len = translator, tokenizer, max_len
        self.device_type, self.description = translator.device, description
        self.lanes = translator.num_translators
        self.eos_token = tokenizer.eos_token
        # span corruption's sentinels are never generated (the torch model's generation_config.suppress_tokens)
        self.suppressed = [[token] for token in tokenizer.convert_ids_to_tokens(sentinel_ids(tokenizer))]

    @classmethod
    def load(cls, folder, device: str = "auto", threads: int = 0, lanes: int = 1) -> "CT2Engine":

        import ctranslate2

        info = json.loads((Path(folder) / CT2_MARKER).read_text(encoding="utf-8"))
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        if not threads and device == "cpu":
            # CTranslate2's own default (4 threads) oversubscribes small machines: on 2 cores, int8 decoding of the
            # 0.2B model ran 1.5x faster than my_generate with 2 threads and 2.4-2.8x with 1 (dev/LOG.md).
            threads = max(1, (os.cpu_count() or 2) // (2 * lanes))
        translator = ctranslate2.Translator(
            str(folder),
            device=device.split(":")[0],
            compute_type=info["quantization"],
            intra_threads=threads,
            inter_threads=lanes,  # batches (or single requests) decoded at the same time
        )
        tokenizer = load_tokenizer(folder)
        description = f"ctranslate2 {info['quantization']} on {device}"
        return cls(translator, tokenizer, info["max_seq_len"], description)

    def prompt_tokens(self, prompt: str) -> int:
        return len(self.tokenizer(prompt)["input_ids"])

    def source(self, prompt: str) -> list[str]:
        ids = self.tokenizer(prompt, truncation=True, max_length=self.max_len)["input_ids"]
        return self.tokenizer.convert_ids_to_tokens(ids)

    def options(self, search_type: str, max_new_tokens: int | None, overrides: dict) -> dict:
        if search_type not in CT2_SEARCH:
            raise ValueError(f"search_type {search_type!r} is not available with CTranslate2 (use the torch engine)")
        options = dict(CT2_SEARCH[search_type])
        for key, value in overrides.items():
            if key not in CT2_OVERRIDES:
                raise ValueError(f"{key} is not a CTranslate2 generation setting")
            options[CT2_OVERRIDES[key]] = value
        options["max_decoding_length"] = min(max_new_tokens or self.max_len, self.max_len)
        if self.suppressed:
            options["suppress_sequences"] = self.suppressed
        return options

    def _text(self, tokens: list[str]) -> str:
        ids = self.tokenizer.convert_tokens_to_ids(tokens)
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def generate(self, prompts, search_type="greedy", max_new_tokens=None, batch_size=32, **overrides) -> list[str]:
        return [a.text for a in self.answer(prompts, search_type, max_new_tokens, batch_size, **overrides)]

    def answer(
        self, prompts, search_type="greedy", max_new_tokens=None, batch_size=32, progress=False, stop=None, **overrides
    ):
        """As `Engine.answer`; a `stop` string cuts the answer after generation (CTranslate2 stops at tokens, not
        strings)."""
        options = self.options(search_type, max_new_tokens, overrides)
        results = self.translator.translate_batch(
            [self.source(p) for p in prompts], max_batch_size=batch_size, return_end_token=True, **options
        )
        answers = []
        for result in results:
            tokens = result.hypotheses[0]
            text, stopped = cut_at_stop(self._text(tokens), stop)
            ended = bool(tokens) and tokens[-1] == self.eos_token
            answers.append(Generation(text.strip(), len(tokens), "stop" if ended or stopped else "length"))
        return answers

    def stream(self, prompt, on_text, search_type="greedy", max_new_tokens=None, cancelled=None, **overrides):
        """One answer, text handed to `on_text` as it is produced; stops (GenerationCancelled) once `cancelled`
        is set. Text is handed over once it can no longer change (see IncrementalText)."""
        options = self.options(search_type, max_new_tokens, overrides)
        if options.pop("beam_size", 1) > 1:
            raise ValueError("CTranslate2 streams greedy and sampling search only")
        source = self.source(prompt)
        started, first_at, ended = time.perf_counter(), None, False
        answer = IncrementalText(self.tokenizer)
        steps = self.translator.generate_tokens(source, **options)
        try:
            for step in steps:
                if cancelled is not None and cancelled.is_set():
                    raise GenerationCancelled
                if first_at is None:
                    first_at = time.perf_counter()
                if step.token == self.eos_token:
                    ended = True
                    break
                if piece := answer.add(step.token_id):
                    on_text(piece)
        finally:
            steps.close()
        if piece := answer.finish():
            on_text(piece)
        return Generation.timed(answer.sent, len(answer.ids) + int(ended), ended, len(source), started, first_at)


GATHER_SECONDS = 0.02  # CTranslate2 batches: how long a batch waits for more requests while clients come together


class CT2BatchedGenerator:
    """Batched serving on CTranslate2: the requests waiting when a batch starts are decoded together.

    CTranslate2 decodes a batch from start to end (`translate_batch`; no row joins it half-way), so a request that
    arrives while a batch runs waits for the next free lane: the engine's `lanes` (the translator's
    `inter_threads`, `sccl serve --workers`) batches decode at once, each from its own loop. The step callback hands
    each row's tokens to that request's stream as they are produced, and ends a row (by returning True) when its
    request is cancelled or has reached its own `max_new_tokens`, so rows leave the batch as the torch batcher's do. Requests with different settings
    (temperature, top-p, penalties: CTranslate2 takes them per batch) run as separate batches, one after the other.
    Greedy answers are the ones the request gets alone (tested). CTranslate2 has one random generator for the
    process, so a sampling request cannot carry a `seed` of its own: that is refused."""

    def __init__(self, engine, max_batch: int = 16):
        self.engine, self.max_batch = engine, max_batch
        self.eos = engine.tokenizer.eos_token_id
        self.incoming: queue.Queue[Request] = queue.Queue()
        self.batches = 0  # batches run (one translate_batch call each)
        self._count = threading.Lock()
        self._stop = threading.Event()
        # One loop per lane (the translator's `inter_threads`): while one batch decodes, the requests that arrive
        # start in the next lane instead of waiting for the whole batch to end.
        self.threads = [
            threading.Thread(target=self._loop, name=f"ct2-batched-decoding-{lane}", daemon=True)
            for lane in range(engine.lanes)
        ]
        for thread in self.threads:
            thread.start()

    def close(self) -> None:
        self._stop.set()
        for _ in self.threads:
            self.incoming.put(None)
        for thread in self.threads:
            thread.join(timeout=30)

    def options(self, settings: dict) -> dict:
        """CTranslate2's options for a request's settings; ValueError naming what CTranslate2 cannot do."""
        settings = dict(settings)
        if settings.pop("seed", None) is not None:
            raise ValueError("seed: CTranslate2 has one random generator per process; use the torch engine")
        options = self.engine.options(settings.pop("search_type", "greedy"), None, settings)
        del options["max_decoding_length"]  # each request's own limit is kept by the step callback
        if options.get("beam_size", 1) > 1:
            raise ValueError("beam search is not batched: CTranslate2 streams greedy and sampling search only")
        return options

    def submit(self, prompt: str, on_text, max_new_tokens: int | None, cancelled=None, **settings) -> Generation:
        """As `BatchedGenerator.submit`: the answer, its text handed to `on_text` as it is produced."""
        options = self.options(settings)
        source = self.engine.source(prompt)
        limit = min(max_new_tokens or self.engine.max_len, self.engine.max_len)
        text = IncrementalText(self.engine.tokenizer)
        request = Request(source, limit, on_text, options, cancelled or threading.Event(), text=text)
        return answer_of(request, self.incoming)

    def _loop(self) -> None:
        shared = False  # whether this lane's last batch held several requests: clients are arriving together
        while not self._stop.is_set():
            request = self.incoming.get()
            if request is None:
                return
            waiting = [request]
            # A batch runs to its end, so a request that misses it by a moment waits a whole batch. While clients
            # arrive together, a batch waits a moment (GATHER_SECONDS) for them; a lone client never waits.
            deadline = time.perf_counter() + (GATHER_SECONDS if shared else 0.0)
            while len(waiting) < self.max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    request = self.incoming.get(timeout=remaining) if remaining > 0 else self.incoming.get_nowait()
                except queue.Empty:
                    break
                if request is None:
                    self._stop.set()
                    break
                waiting.append(request)
            shared = len(waiting) > 1
            groups: dict[tuple, list[Request]] = {}
            for request in waiting:
                groups.setdefault(tuple(sorted(request.settings.items())), []).append(request)
            for group in groups.values():
                try:
                    self._run(group)
                except Exception as error:  # every request of the batch gets it; the loop goes on
                    for request in group:
                        if not request.done.is_set():
                            request.error = error
                            request.done.set()

    def _run(self, requests: list[Request]) -> None:
        for request in requests:
            if request.cancelled.is_set():
                request.done.set()  # result None: cancelled before it started
        rows = [r for r in requests if not r.done.is_set()]
        if not rows:
            return
        ended, eos = [False] * len(rows), self.eos
        # The step callback runs on CTranslate2's threads. If what it holds leads back to the translator (through
        # this batcher, or a request's on_text that holds it), the translator may be freed last on such a thread,
        # join itself, and abort the process ("Resource deadlock avoided": test_ct2's lanes test, 9 of 14 runs
        # under load before this, 0 of 6 after; dev/LOG.md 2026-12-07). So the callback reaches the requests
        # through `live`, emptied after the batch, and holds no reference to the batcher.
        live = {"rows": rows}

        def on_step(step) -> bool:  # True ends this row
            request = live["rows"][step.batch_id]
            if request.cancelled.is_set():
                return True
            if request.first_token_at is None:
                request.first_token_at = time.perf_counter()
            if step.token_id == eos:
                ended[step.batch_id] = True
                return True
            request.generated.append(step.token_id)
            if piece := request.text.add(step.token_id):
                request.on_text(piece)
            return len(request.generated) >= request.max_new_tokens

        with self._count:
            self.batches += 1
        try:
            self.engine.translator.translate_batch(
                [r.prompt_ids for r in rows],
                max_batch_size=len(rows),
                max_decoding_length=max(r.max_new_tokens for r in rows),
                callback=on_step,
                **rows[0].settings,
            )
        finally:
            live.clear()
        for row, request in enumerate(rows):
            if not request.cancelled.is_set():
                if piece := request.text.finish():
                    request.on_text(piece)
                request.result = Generation.timed(
                    request.text.sent, len(request.generated) + int(ended[row]), bool(ended[row]),
                    len(request.prompt_ids), request.started, request.first_token_at,
                )  # fmt: skip
            request.done.set()
