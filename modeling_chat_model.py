"""The sccl-hf text-to-text chat model: T5 with ChatLM-mini-Chinese's ``my_generate``.

This file travels with every saved model (``trust_remote_code=True``) and therefore imports only from
``torch`` and ``transformers`` (and its sibling configuration file). The class adds no parameters to
``T5ForConditionalGeneration``, so a state dict with T5 key names loads with no missing or unexpected keys.
"""

import torch
import torch.nn.functional as F
from transformers import GenerationConfig, T5ForConditionalGeneration

try:  # inside a saved model folder (loaded as a package by transformers' dynamic modules)
    from .configuration_chat_model import TextToTextModelConfig
except ImportError:  # installed as a top-level module next to this file
    from configuration_chat_model import TextToTextModelConfig


# ChatLM-mini-Chinese's settings for each search type.
SEARCH_SETTINGS = {
    "greedy": dict(do_sample=False, num_beams=1),
    "beam": dict(do_sample=False, num_beams=5, no_repeat_ngram_size=4, length_penalty=-2.0, early_stopping=True),
    "sampling": dict(do_sample=True, num_beams=1, top_k=50, top_p=0.8, temperature=0.98, no_repeat_ngram_size=4),
    "contrastive": dict(penalty_alpha=0.5, top_k=50),
}


class TextToTextModel(T5ForConditionalGeneration):
    config_class = TextToTextModelConfig
    # T5's forward takes **kwargs but its loss is a plain token mean that ignores `num_items_in_batch`. Saying
    # so keeps the Trainer from multiplying that mean by the number of processes (which, in a multi-process
    # run, scaled the gradients and the logged loss by the world size).
    accepts_loss_kwargs = False

    @torch.no_grad()
    def my_generate(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor,
        max_seq_len: int = 256,
        search_type: str = "beam",
        streamer=None,
        tokenizer=None,
        **overrides,
    ) -> torch.LongTensor:
        """Generate responses for a batch of prompts.

        Args:
            input_ids: ``(batch, prompt_len)`` encoder token ids; prompts end in ``[EOS]``.
            attention_mask: ``(batch, prompt_len)``, 1 for real tokens, 0 for padding.
            max_seq_len: most new tokens to generate.
            search_type: ``greedy``, ``beam`` (5 beams), ``sampling`` (top-k 50, top-p 0.8, T 0.98) or
                ``contrastive`` (penalty_alpha 0.5, top-k 50).
            streamer: optional ``transformers`` streamer (``put``/``end``). Beam search cannot stream, so
                its result is put in one piece when it is done.
            tokenizer: needed by ``generate`` only with ``stop_strings`` (an override: stop an answer at them).
            overrides: generation settings that replace the search type's defaults (e.g. ``temperature``).

        Returns:
            ``(batch, response_len)`` decoder token ids, starting with the decoder start token.
        """
        if search_type not in SEARCH_SETTINGS:
            raise ValueError(f"search_type must be one of {sorted(SEARCH_SETTINGS)}, got {search_type!r}")
        settings = {**SEARCH_SETTINGS[search_type], **overrides}
        if search_type == "contrastive":
            unsupported = set(overrides) - {"penalty_alpha", "top_k"}
            if unsupported:
                raise ValueError(f"contrastive search takes penalty_alpha and top_k only, not {sorted(unsupported)}")
            return self._contrastive_search(
                input_ids, attention_mask, max_seq_len, settings["penalty_alpha"], settings["top_k"], streamer
            )
        generation_config = GenerationConfig(
            max_new_tokens=max_seq_len,
            eos_token_id=self.config.eos_token_id,
            pad_token_id=self.config.pad_token_id,
            decoder_start_token_id=self.config.decoder_start_token_id,
            **settings,
        )
        extra = {"tokenizer": tokenizer} if tokenizer is not None else {}
        if settings.get("num_beams", 1) > 1 and streamer is not None:
            output = self.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config, **extra
            )
            streamer.put(output[:, :1].cpu())  # the decoder start token, as generate() streams it
            streamer.put(output[0, 1:].cpu())
            streamer.end()
            return output
        return self.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=generation_config,
            streamer=streamer,
            **extra,
        )

    def _contrastive_search(self, input_ids, attention_mask, max_new_tokens, penalty_alpha, top_k, streamer):
        """Contrastive search (Su et al., 2022) for an encoder-decoder.

        Written here because transformers 5 moved contrastive search out of ``generate`` to a Hub repository,
        which a self-contained, offline model folder cannot fetch. At each step the ``top_k`` most likely
        tokens are scored as ``(1 - alpha) * p(token) - alpha * max cosine(h_token, h_previous)`` and the
        best one is kept; the decoder cache is expanded to the candidates and cut back to the winner.
        """
        batch, k = input_ids.shape[0], top_k
        pad, eos = self.config.pad_token_id, self.config.eos_token_id
        start = torch.full((batch, 1), self.config.decoder_start_token_id, dtype=torch.long, device=input_ids.device)
        encoder_outputs = self.get_encoder()(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        out = self(
            encoder_outputs=encoder_outputs,
            attention_mask=attention_mask,
            decoder_input_ids=start,
            use_cache=True,
            output_hidden_states=True,
            return_dict=True,
        )
        cache, logits = out.past_key_values, out.logits[:, -1, :]
        context = out.decoder_hidden_states[-1]  # (batch, steps, d_model)
        expanded_encoder = encoder_outputs.last_hidden_state.repeat_interleave(k, dim=0)
        expanded_mask = attention_mask.repeat_interleave(k, dim=0)
        generated, finished = start, torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
        if streamer is not None:
            streamer.put(start.cpu())
        suppressed = self.generation_config.suppress_tokens or []  # span corruption's sentinels, if any
        for _ in range(max_new_tokens):
            logits[:, suppressed] = -float("inf")
            top_probs, top_ids = logits.softmax(-1).topk(k, dim=-1)  # (batch, k)
            cache.batch_repeat_interleave(k)
            out = self(
                encoder_outputs=(expanded_encoder,),
                attention_mask=expanded_mask,
                decoder_input_ids=top_ids.reshape(-1, 1),
                past_key_values=cache,
                use_cache=True,
                output_hidden_states=True,
                return_dict=True,
            )
            candidate_hidden = out.decoder_hidden_states[-1][:, -1, :].reshape(batch, k, -1)
            similarity = F.cosine_similarity(candidate_hidden.unsqueeze(2), context.unsqueeze(1), dim=-1)
            score = (1 - penalty_alpha) * top_probs - penalty_alpha * similarity.max(dim=-1).values
            best = score.argmax(dim=-1)  # (batch,)
            rows = torch.arange(batch, device=input_ids.device) * k + best
            cache = out.past_key_values
            cache.batch_select_indices(rows)
            next_tokens = top_ids.gather(1, best.unsqueeze(1)).squeeze(1)
            next_tokens = torch.where(finished, torch.full_like(next_tokens, pad), next_tokens)
            generated = torch.cat([generated, next_tokens.unsqueeze(1)], dim=1)
            context = torch.cat([context, candidate_hidden[torch.arange(batch), best].unsqueeze(1)], dim=1)
            logits = out.logits[rows, -1, :]
            if streamer is not None:
                streamer.put(next_tokens.cpu())
            finished |= next_tokens == eos
            if finished.all():
                break
        if streamer is not None:
            streamer.end()
        return generated
