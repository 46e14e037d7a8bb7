"""Generation behind one interface: `Engine.generate` (a batch of prompts) and `Engine.stream` (one answer, text
handed over as it is produced, cancellable). Chat, serving, evaluation and DPO data use only this, so another
backend can be added here without touching them.

The torch backend runs the model's own `my_generate` (greedy, beam, sampling, contrastive); the CTranslate2
backend (`ct2.CT2Engine`, a folder made by stage export_ct2) runs greedy, beam and sampling search. `load_engine`
picks one. Also here: the answer type both return (`Generation`) and the text a stream hands over
(`IncrementalText`).
"""

import functools
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import TextStreamer

from sccl_hf.model import load_model, load_tokenizer, model_max_len


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


class GenerationEngine(Protocol):
    """What chat, serving, evaluation and DPO data use of an engine: `Engine` (torch) and `ct2.CT2Engine` both
    implement it (tests/test_layout.py compares their signatures with these)."""

    tokenizer: object
    max_len: int
    description: str

    def prompt_tokens(self, prompt: str) -> int: ...

    def generate(self, prompts, search_type="greedy", max_new_tokens=None, batch_size=32, **overrides) -> list[str]: ...

    def answer(self, prompts, search_type="greedy", max_new_tokens=None, batch_size=32, progress=False, stop=None,
               **overrides) -> list[Generation]: ...  # fmt: skip

    def stream(self, prompt, on_text, search_type="greedy", max_new_tokens=None, cancelled=None, **overrides
               ) -> Generation: ...  # fmt: skip


class AnswerBatcher(Protocol):
    """What the server's workers use of a batcher: `batching.BatchedGenerator` (torch, continuous) and
    `ct2.CT2BatchedGenerator` both implement it."""

    def submit(self, prompt, on_text, max_new_tokens, cancelled=None, **settings) -> Generation: ...

    def close(self) -> None: ...


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


def load_engine(model_dir, device: str = "auto", engine: str = "torch", threads: int = 0, lanes: int = 1):
    """The generation engine for a folder: `torch` (a model folder) or `ct2`. A CTranslate2 folder (made by
    export_ct2) is recognised whatever `engine` says; `ct2` with a plain model folder converts it once into a cache
    inside it (`ct2_cache`). `lanes`: how many CTranslate2 batches decode at once (its `inter_threads`)."""
    from sccl_hf.ct2 import CT2Engine, ct2_cache, is_ct2_folder  # ctranslate2: only when asked for
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
