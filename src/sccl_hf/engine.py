"""Generation behind one interface: `Engine.generate` (a batch of prompts) and `Engine.stream` (one answer, text
handed over as it is produced, cancellable). Chat, serving, evaluation and DPO data use only this, so another
backend can be added here without touching them.

The torch backend runs the model's own `my_generate` (greedy, beam, sampling, contrastive).
"""

import threading
import time
from dataclasses import dataclass

import torch
from transformers import TextStreamer

from sccl_hf.model import load_model, load_tokenizer, model_max_len


class GenerationCancelled(Exception):
    """Raised inside generation when its consumer has gone (a client disconnected)."""


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    first_token_seconds: float | None
    finish_reason: str  # "stop" (the model ended with [EOS]) or "length" (max_new_tokens reached)

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Answer:
    text: str
    tokens: int  # generated tokens, the closing [EOS] included
    ended: bool  # the model closed the answer with [EOS] (else max_new_tokens cut it)


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
        self, prompts: list[str], search_type: str = "greedy", max_new_tokens: int | None = None, batch_size: int = 32
    ) -> list[str]:
        """Answers to `prompts`, decoded without special tokens, in batches of `batch_size`."""
        return [answer.text for answer in self.answer(prompts, search_type, max_new_tokens, batch_size)]

    @torch.no_grad()
    def answer(
        self, prompts: list[str], search_type: str = "greedy", max_new_tokens: int | None = None, batch_size: int = 32
    ) -> list["Answer"]:
        """Answers to `prompts` with their token counts and whether each ended in `[EOS]` (else it was cut at
        `max_new_tokens`), in batches of `batch_size`."""
        answers = []
        eos, pad = self.model.config.eos_token_id, self.model.config.pad_token_id
        for start in range(0, len(prompts), batch_size):
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
            )
            texts = self.tokenizer.batch_decode(output, skip_special_tokens=True)
            for text, ids in zip(texts, output[:, 1:].tolist()):  # [:, 1:]: the decoder start token is [PAD]
                ended = eos in ids
                tokens = ids.index(eos) + 1 if ended else sum(t != pad for t in ids)
                answers.append(Answer(text.strip(), tokens, ended))
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
        return Generation(
            text="".join(pieces).strip(),
            prompt_tokens=int(batch["input_ids"].shape[1]),
            completion_tokens=len(content_ids) + int(ended),
            seconds=time.perf_counter() - streamer.started,
            first_token_seconds=None if streamer.first_token_at is None else streamer.first_token_at - streamer.started,
            finish_reason="stop" if ended else "length",
        )
