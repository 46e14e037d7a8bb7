"""Generation behind one interface: `Engine.generate` (a batch of prompts) and `Engine.stream` (one answer, text
handed over as it is produced, cancellable). Chat, serving, evaluation and DPO data use only this, so another
backend can be added here without touching them.

The torch backend runs the model's own `my_generate` (greedy, beam, sampling, contrastive); the CTranslate2
backend (`CT2Engine`, a folder made by stage export_ct2) runs greedy, beam and sampling search. `load_engine`
picks one.
"""

import functools
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TextStreamer

from modeling_chat_model import SEARCH_SETTINGS
from sccl_hf.model import load_model, load_tokenizer, model_max_len
from sccl_hf.span_corruption import sentinel_ids


class GenerationCancelled(Exception):
    """Raised inside generation when its consumer has gone (a client disconnected)."""


@dataclass
class Generation:
    """One answer, whatever produced it: an engine's batch (`answer`) or stream, the torch or the CTranslate2
    batcher. Timings are those of a streamed or batched-serving answer (0 and None in a batch of `answer`)."""

    text: str
    completion_tokens: int  # generated tokens, the closing [EOS] included
    finish_reason: str  # "stop" ([EOS] or a stop string) or "length" (max_new_tokens reached)
    prompt_tokens: int = 0
    seconds: float = 0.0
    first_token_seconds: float | None = None

    @classmethod
    def timed(cls, text: str, completion_tokens: int, ended: bool, prompt_tokens: int, started: float, first_at):
        """An answer finished now, `started` and `first_at` (its first token, or None) from `time.perf_counter`."""
        return cls(
            text=text.strip(),
            completion_tokens=completion_tokens,
            finish_reason="stop" if ended else "length",
            prompt_tokens=prompt_tokens,
            seconds=time.perf_counter() - started,
            first_token_seconds=None if first_at is None else first_at - started,
        )

    @property
    def ended(self) -> bool:
        """The answer is complete ([EOS] or a stop string), not cut at max_new_tokens."""
        return self.finish_reason == "stop"

    @property
    def tokens(self) -> int:
        return self.completion_tokens

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


def cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """`text` up to and including the first of the `stop` strings (an answer that reached one is complete)."""
    ends = [text.find(s) + len(s) for s in stop or () if s and s in text]
    return (text[: min(ends)], True) if ends else (text, False)


@functools.lru_cache(maxsize=8)
def byte_fallback_ids(tokenizer) -> frozenset[int]:
    """The ids of a char-level vocabulary's byte-fallback tokens, <0x00> .. <0xFF> (none in a byte-level one)."""
    return frozenset(
        i for t, i in tokenizer.get_vocab().items() if len(t) == 6 and t.startswith("<0x") and t[-1] == ">"
    )


class IncrementalText:
    """The text of a growing answer, handed over in pieces that never change afterwards: joined, the pieces are the
    final decode. A piece waits while the answer ends in a byte-fallback token (a run of <0x..> tokens decodes as
    one, and a run that is not valid UTF-8 turns every byte of it into U+FFFD, so a decode that looked clean can
    still change) or in a character split over byte-level tokens (a trailing U+FFFD).

    Hand-written, not `tokenizers.decoders.DecodeStream` (tried, issue 33): DecodeStream hands over 兴 after its
    three valid byte tokens, and when a fourth byte starts a character that never completes, the run decodes as
    four U+FFFD and it raises "Invalid prefix encountered while decoding stream" (tokenizers 0.23;
    tests/test_batching.py's byte-run case)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.byte_ids = tokenizer, byte_fallback_ids(tokenizer)
        self.ids: list[int] = []
        self.sent = ""

    def add(self, token_id: int) -> str:
        """The new stable text after `token_id` ("" while it waits)."""
        self.ids.append(token_id)
        if token_id in self.byte_ids:
            return ""
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd") or len(text) <= len(self.sent):
            return ""
        piece, self.sent = text[len(self.sent) :], text
        return piece

    def finish(self) -> str:
        """The rest of the text, once the answer is complete."""
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        piece, self.sent = text[len(self.sent) :], text
        return piece


class CallbackStreamer(TextStreamer):
    """A streamer that hands each printable piece of text to `on_text`, counts the generated tokens, notes when
    the first one arrived, and stops the generation (by raising) once `cancelled` is set."""

    def __init__(self, tokenizer, on_text, cancelled: threading.Event | None = None):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.on_text, self.cancelled = on_text, cancelled
        self.special_ids = set(tokenizer.all_special_ids)
        self.token_ids: list[int] = []
        self.started = time.perf_counter()
        self.first_token_at = None

    def put(self, value):
        if self.cancelled is not None and self.cancelled.is_set():
            raise GenerationCancelled
        if not self.next_tokens_are_prompt:
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            self.token_ids += value.reshape(-1).tolist()
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False):
        if text:
            self.on_text(text)


def pick_device(device: str = "auto") -> tuple[torch.device, torch.dtype]:
    """CPU in float32 by default; a CUDA GPU in bf16 (fp16 where bf16 is not supported)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        return torch.device(device), torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.device(device), torch.float32


class Engine:
    """The torch backend: a model and its tokenizer, answering with `my_generate`."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_len = model_max_len(model.config)
        self.device_type = model.device.type
        self.description = f"torch {str(model.dtype).removeprefix('torch.')} on {model.device}"

    @classmethod
    def load(cls, model_dir, device: str = "auto") -> "Engine":
        """A saved model directory, ready to answer: on the GPU in half precision when there is one."""
        device, dtype = pick_device(device)
        return cls(load_model(model_dir, dtype=dtype).to(device), load_tokenizer(model_dir))

    def prompt_tokens(self, prompt: str) -> int:
        return len(self.tokenizer(prompt)["input_ids"])

    def _new_tokens(self, max_new_tokens: int | None) -> int:
        return min(max_new_tokens or self.max_len, self.max_len)

    def generate(
        self,
        prompts: list[str],
        search_type: str = "greedy",
        max_new_tokens: int | None = None,
        batch_size: int = 32,
        **overrides,
    ) -> list[str]:
        """Answers to `prompts`, decoded without special tokens, in batches of `batch_size`."""
        return [a.text for a in self.answer(prompts, search_type, max_new_tokens, batch_size, **overrides)]

    @torch.no_grad()
    def answer(
        self,
        prompts: list[str],
        search_type: str = "greedy",
        max_new_tokens: int | None = None,
        batch_size: int = 32,
        progress: bool = False,
        stop: list[str] | None = None,
        **overrides,
    ) -> list[Generation]:
        """Answers to `prompts` with their token counts and whether each ended in `[EOS]` or a `stop` string (else
        it was cut at `max_new_tokens`), in batches of `batch_size`. An answer stops generating at the first `stop`
        string, which it keeps (a row of the batch that stopped is padded while the others go on). `overrides`
        replace the search type's settings (temperature, top_p, repetition_penalty, no_repeat_ngram_size, ...).
        `progress`: a bar over the batches."""
        from tqdm.auto import tqdm

        answers = []
        eos, pad = self.model.config.eos_token_id, self.model.config.pad_token_id
        starts = range(0, len(prompts), batch_size)
        for start in tqdm(starts, desc="generating", unit="batch", disable=len(starts) < 2 or not progress):
            batch = self.tokenizer(
                prompts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_len,
                return_tensors="pt",
            ).to(self.model.device)
            output = self.model.my_generate(
                batch["input_ids"],
                batch["attention_mask"],
                max_seq_len=self._new_tokens(max_new_tokens),
                search_type=search_type,
                **({"stop_strings": stop, "tokenizer": self.tokenizer} if stop else {}),
                **overrides,
            )
            texts = self.tokenizer.batch_decode(output, skip_special_tokens=True)
            for text, ids in zip(texts, output[:, 1:].tolist()):  # [:, 1:]: the decoder start token is [PAD]
                text, stopped = cut_at_stop(text, stop)
                ended = eos in ids
                tokens = ids.index(eos) + 1 if ended else sum(t != pad for t in ids)
                answers.append(Generation(text.strip(), tokens, "stop" if ended or stopped else "length"))
        return answers

    def stream(
        self,
        prompt: str,
        on_text,
        search_type: str = "greedy",
        max_new_tokens: int | None = None,
        cancelled: threading.Event | None = None,
        **overrides,
    ) -> Generation:
        """Generate one answer, handing text to `on_text` as it is produced (beam search: all at the end).
        `overrides` replace the search type's generation settings (e.g. temperature, top_p)."""
        batch = self.tokenizer([prompt], truncation=True, max_length=self.max_len, return_tensors="pt")
        batch = batch.to(self.model.device)
        pieces = []

        def collect(text):
            pieces.append(text)
            on_text(text)

        streamer = CallbackStreamer(self.tokenizer, collect, cancelled)
        self.model.my_generate(
            batch["input_ids"],
            batch["attention_mask"],
            max_seq_len=self._new_tokens(max_new_tokens),
            search_type=search_type,
            streamer=streamer,
            **overrides,
        )
        ended = self.model.config.eos_token_id in streamer.token_ids
        content_ids = [t for t in streamer.token_ids if t not in streamer.special_ids]
        return Generation.timed("".join(pieces), len(content_ids) + int(ended), ended,
                                int(batch["input_ids"].shape[1]), streamer.started, streamer.first_token_at)  # fmt: skip


# -- CTranslate2 ------------------------------------------------------------------------------------------------

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


def load_engine(model_dir, device: str = "auto", engine: str = "torch", threads: int = 0, lanes: int = 1):
    """The generation engine for a folder: `torch` (a model folder) or `ct2`. A CTranslate2 folder (made by
    export_ct2) is recognised whatever `engine` says; `ct2` with a plain model folder converts it once into a cache
    inside it (`ct2_cache`). `lanes`: how many CTranslate2 batches decode at once (its `inter_threads`)."""
    from sccl_hf.errors import ModelFolderError
    from sccl_hf.model_folder import local_model_dir

    if engine not in ("torch", "ct2"):
        raise ModelFolderError(f"engine: must be torch or ct2, got '{engine}'")
    folder = str(local_model_dir(model_dir))  # a hub reference resolved once, here
    if is_ct2_folder(folder):
        return CT2Engine.load(folder, device, threads, lanes)
    if engine == "ct2":
        return CT2Engine.load(ct2_cache(folder, device), device, threads, lanes)
    return Engine.load(folder, device)


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

    def _source(self, prompt: str) -> list[str]:
        ids = self.tokenizer(prompt, truncation=True, max_length=self.max_len)["input_ids"]
        return self.tokenizer.convert_ids_to_tokens(ids)

    def _options(self, search_type: str, max_new_tokens: int | None, overrides: dict) -> dict:
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
        options = self._options(search_type, max_new_tokens, overrides)
        results = self.translator.translate_batch(
            [self._source(p) for p in prompts], max_batch_size=batch_size, return_end_token=True, **options
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
        options = self._options(search_type, max_new_tokens, overrides)
        if options.pop("beam_size", 1) > 1:
            raise ValueError("CTranslate2 streams greedy and sampling search only")
        source = self._source(prompt)
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
