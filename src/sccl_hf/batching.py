"""Continuous batching for serving: one decoding loop answers every request at once, and requests join and
leave the running batch between decoding steps.

Written here because transformers' `generate` decodes a fixed batch from start to end, and the serving engines
that batch continuously (vLLM, TGI) do not run this encoder-decoder model on a CPU.

How the batch is kept:

- Each request's encoder runs once, when it joins. The cross-attention keys and values of every decoder layer
  are then computed from its encoder output and kept. In the batch they are padded on the right, up to the
  longest prompt, and the padding is masked.
- The decoder's self-attention cache holds one row per request, padded on the left. Every row's newest token is
  at the same, last position. T5's relative position bias depends only on the distance between query and key,
  so each row sees the same distances as it would alone, and the padding is masked. A joining row starts as all
  padding, and the row of a request that left is dropped.
- One step runs the decoder on every row's last token. Then each row picks its next token with its own settings:
  greedy, or sampling with its temperature, top-k and top-p, each optionally with repetition_penalty and
  no_repeat_ngram_size (transformers' logits processors, applied row by row: `next_token_scores`). A sampling request
  with a `seed` draws from its own random generator, so its answer does not depend on the other rows.

Greedy answers are the ones `my_generate` gives for the request alone. Beam and contrastive search are not
batched; the server runs them on their own, as before.
"""

import queue
import threading
import time
from dataclasses import dataclass, field

import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.generation.logits_process import (
    LogitsProcessorList,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from modeling_chat_model import SEARCH_SETTINGS
from sccl_hf.engine import Generation, IncrementalText

BATCHED_SEARCH = ("greedy", "sampling")
# my_generate's `sampling` settings (modeling_chat_model.SEARCH_SETTINGS, written once there)
SAMPLING_DEFAULTS = {k: v for k, v in SEARCH_SETTINGS["sampling"].items() if k not in ("do_sample", "num_beams")}


@dataclass
class Request:
    prompt_ids: list[int]
    max_new_tokens: int
    on_text: object  # called with each new piece of text
    settings: dict
    cancelled: threading.Event
    done: threading.Event = field(default_factory=threading.Event)
    result: Generation | None = None
    error: BaseException | None = None
    # decoding state
    generated: list[int] = field(default_factory=list)
    text: IncrementalText | None = None
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None


def answer_of(request: Request, incoming: queue.Queue) -> Generation:
    """Queue `request` for a decoding loop and wait for its answer: the loop's error is raised here, and a
    request cancelled before its answer was finished raises GenerationCancelled."""
    from sccl_hf.engine import GenerationCancelled

    incoming.put(request)
    request.done.wait()
    if request.error is not None:
        raise request.error
    if request.result is None:
        raise GenerationCancelled
    return request.result


class BatchedGenerator:
    """A decoding loop in its own thread. `submit` returns once the answer is finished (or cancelled)."""

    def __init__(self, model, tokenizer, max_len: int, max_batch: int = 32):
        self.model, self.tokenizer, self.max_len, self.max_batch = model.eval(), tokenizer, max_len, max_batch
        config = model.config
        self.eos, self.start = config.eos_token_id, config.decoder_start_token_id
        self.scale = config.d_model**-0.5 if config.tie_word_embeddings else 1.0
        self.suppressed = list(model.generation_config.suppress_tokens or [])  # span corruption's sentinels
        self.incoming: queue.Queue[Request] = queue.Queue()
        self.active: list[Request] = []
        self.steps = 0  # decoding steps run (a step serves every active request)
        self._reset_batch()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="batched-decoding", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self._stop.set()
        self.incoming.put(None)
        self.thread.join(timeout=30)

    def submit(self, prompt: str, on_text, max_new_tokens: int | None, cancelled=None, **settings) -> Generation:
        """Answer `prompt` in the shared batch, handing text to `on_text` as it is produced. Raises
        GenerationCancelled when `cancelled` is set before the answer is finished."""
        search_type = settings.pop("search_type", "greedy")
        if search_type not in BATCHED_SEARCH:
            raise ValueError(f"search_type {search_type!r} is not batched")
        if search_type == "sampling":
            settings = {**SAMPLING_DEFAULTS, **settings, "sample": True}
        if settings.get("seed") is not None:  # its own generator: its samples do not depend on who shares the batch
            settings["generator"] = torch.Generator(device=self.model.device).manual_seed(int(settings["seed"]))
        ids = self.tokenizer(prompt, truncation=True, max_length=self.max_len)["input_ids"]
        limit = min(max_new_tokens or self.max_len, self.max_len)
        request = Request(
            ids, limit, on_text, settings, cancelled or threading.Event(), text=IncrementalText(self.tokenizer)
        )
        return answer_of(request, self.incoming)

    # -- the loop -------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.active:  # idle: wait for work
                request = self.incoming.get()
                if request is None:
                    return
                joining = [request]
            else:
                joining = []
            while len(self.active) + len(joining) < self.max_batch:
                try:
                    request = self.incoming.get_nowait()
                except queue.Empty:
                    break
                if request is None:
                    return
                joining.append(request)
            try:
                self._drop([r for r in self.active if r.cancelled.is_set()])
                if joining:
                    self._join(joining)
                self._step()
            except Exception as error:  # every waiting request gets it; the loop goes on with a fresh batch
                for request in self.active + joining:
                    request.error = error
                    request.done.set()
                self.active = []
                self._reset_batch()

    def _reset_batch(self) -> None:
        self.self_cache: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer (batch, heads, steps, dk)
        self.cross_cache: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer (batch, heads, source, dk)
        self.self_mask = None  # (batch, steps)
        self.encoder_states = None  # (batch, source, d_model)
        self.encoder_mask = None  # (batch, source)

    @torch.no_grad()
    def _join(self, requests: list[Request]) -> None:
        device = self.model.device
        batch = self.tokenizer.pad({"input_ids": [r.prompt_ids for r in requests]}, return_tensors="pt").to(device)
        states = self.model.encoder(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
        mask = batch["attention_mask"]
        cross = []
        for block in self.model.decoder.block:
            attention = block.layer[1].EncDecAttention
            shape = (states.shape[0], states.shape[1], -1, attention.key_value_proj_dim)
            cross.append(
                (attention.k(states).view(shape).transpose(1, 2), attention.v(states).view(shape).transpose(1, 2))
            )
        steps = 0 if self.self_mask is None else self.self_mask.shape[1]
        new_self_mask = torch.zeros(len(requests), steps, dtype=torch.long, device=device)
        if self.encoder_states is None:
            self.encoder_states, self.encoder_mask, self.cross_cache = states, mask, cross
            self.self_mask = new_self_mask
            self.self_cache = [None] * len(cross)
        else:
            width = max(self.encoder_states.shape[1], states.shape[1])
            self.encoder_states = torch.cat([_pad(self.encoder_states, 1, width), _pad(states, 1, width)])
            self.encoder_mask = torch.cat([_pad(self.encoder_mask, 1, width), _pad(mask, 1, width)])
            self.cross_cache = [
                tuple(torch.cat([_pad(old, 2, width), _pad(new, 2, width)]) for old, new in zip(pair, new_pair))
                for pair, new_pair in zip(self.cross_cache, cross)
            ]
            self.self_mask = torch.cat([self.self_mask, new_self_mask])
            if steps:  # the joiners' self-attention rows: all padding so far
                self.self_cache = [
                    tuple(torch.cat([t, t.new_zeros(len(requests), *t.shape[1:])]) for t in pair)
                    for pair in self.self_cache
                ]
        self.active += requests

    def _drop(self, leaving: list[Request]) -> None:
        if not leaving:
            return
        keep = [i for i, r in enumerate(self.active) if r not in leaving]
        for request in leaving:  # cancelled: result stays None
            request.done.set()
        self.active = [self.active[i] for i in keep]
        if not self.active:
            self._reset_batch()
            return
        index = torch.tensor(keep, device=self.model.device)
        self.encoder_states, self.encoder_mask = self.encoder_states[index], self.encoder_mask[index]
        self.self_mask = self.self_mask[index]
        self.cross_cache = [tuple(t[index] for t in pair) for pair in self.cross_cache]
        if self.self_cache and self.self_cache[0] is not None:
            self.self_cache = [tuple(t[index] for t in pair) for pair in self.self_cache]
        # left padding no row needs any more (the longest rows left): cut it
        unused = int((self.self_mask.sum(0) == 0).long().cumprod(0).sum())
        if unused:
            self.self_mask = self.self_mask[:, unused:]
            self.self_cache = [tuple(t[:, :, unused:] for t in pair) for pair in self.self_cache]

    @torch.no_grad()
    def _step(self) -> None:
        if not self.active:
            return
        device = self.model.device
        tokens = torch.tensor([[r.generated[-1] if r.generated else self.start] for r in self.active], device=device)
        self_cache, cross_cache = DynamicCache(), DynamicCache()
        for layer, (keys, values) in enumerate(self.cross_cache):
            cross_cache.update(keys, values, layer)
        if self.self_cache and self.self_cache[0] is not None:
            for layer, (keys, values) in enumerate(self.self_cache):
                self_cache.update(keys, values, layer)
        cache = EncoderDecoderCache(self_cache, cross_cache)
        mask = torch.cat([self.self_mask, torch.ones(len(self.active), 1, dtype=torch.long, device=device)], dim=1)
        output = self.model.decoder(
            input_ids=tokens,
            attention_mask=mask,
            encoder_hidden_states=self.encoder_states,
            encoder_attention_mask=self.encoder_mask,
            cache=cache,
            use_cache=True,
        )
        logits = self.model.lm_head(output.last_hidden_state[:, -1] * self.scale).float()
        self.self_mask = mask
        self.self_cache = [(layer.keys, layer.values) for layer in cache.self_attention_cache.layers]
        self.steps += 1
        finished = []
        for row, request in enumerate(self.active):
            token = self._choose(logits[row], request)
            if request.first_token_at is None:
                request.first_token_at = time.perf_counter()
            request.generated.append(token)
            ended = token == self.eos
            if not ended and (piece := request.text.add(token)):
                request.on_text(piece)
            if ended or len(request.generated) >= request.max_new_tokens:
                self._finish(request, ended)
                finished.append(request)
        if finished:
            self._drop_finished(finished)

    def _finish(self, request: Request, ended: bool) -> None:
        if piece := request.text.finish():
            request.on_text(piece)
        request.result = Generation.timed(request.text.sent, len(request.generated), ended, len(request.prompt_ids),
                                          request.started, request.first_token_at)  # fmt: skip

    def _drop_finished(self, finished: list[Request]) -> None:
        self._drop(finished)  # marks them done; their result is set

    def _choose(self, logits: torch.Tensor, request: Request) -> int:
        """The next token of one row, with the request's own settings."""
        if self.suppressed:
            logits = logits.clone()
            logits[self.suppressed] = -float("inf")
        scores = next_token_scores(logits, [self.start, *request.generated], request.settings)
        if not request.settings.get("sample"):
            return int(scores.argmax())
        return int(torch.multinomial(scores.softmax(-1), 1, generator=request.settings.get("generator")))


def logits_processors(settings: dict) -> LogitsProcessorList:
    """transformers' logits processors and warpers for one request's settings, in generate's order: repetition
    penalty, n-gram blocking, then (sampling) temperature, top-k and top-p; a warper whose setting changes nothing
    is left out, as generate leaves it out."""
    processors = LogitsProcessorList()
    if settings.get("repetition_penalty", 1.0) != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(settings["repetition_penalty"]))
    if settings.get("no_repeat_ngram_size"):
        processors.append(NoRepeatNGramLogitsProcessor(settings["no_repeat_ngram_size"]))
    if settings.get("sample"):
        processors.append(TemperatureLogitsWarper(settings.get("temperature", 1.0)))
        if settings.get("top_k"):
            processors.append(TopKLogitsWarper(settings["top_k"]))
        if settings.get("top_p", 1.0) < 1.0:
            processors.append(TopPLogitsWarper(settings["top_p"]))
    return processors


def next_token_scores(logits: torch.Tensor, history: list[int], settings: dict) -> torch.Tensor:
    """One row's next-token scores after its request's `logits_processors`. The processors take a batch with one
    setting for all rows; each request here brings its own, so each row goes through them alone.
    `history`: the decoder's input so far, start token included."""
    processors = logits_processors(settings)
    if not processors:
        return logits
    history_ids = torch.tensor([history], device=logits.device)
    return processors(history_ids, logits.clone().unsqueeze(0))[0]


def _pad(tensor: torch.Tensor, dim: int, width: int) -> torch.Tensor:
    """Zero padding on the right of `dim` up to `width`."""
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor, tensor.new_zeros(shape)], dim=dim)
