"""T5's span corruption: hide spans of a text behind sentinel tokens; the target lists each sentinel and its span.

    text:    我 们 今 天 去 公 园 散 步 [EOS]
    input:   我 们 <extra_id_0> 公 园 <extra_id_1> [EOS]
    target:  <extra_id_0> 今 天 去 <extra_id_1> 散 步 [EOS]

The shares are T5's (Raffel et al. 2020, section 3.1.4; `random_spans_noise_mask` in the T5 code and in
transformers' `run_t5_mlm_flax.py`): `noise_density` 0.15 of the tokens, in spans of `mean_span` 3 on average, the
span lengths a random partition of the hidden tokens. One change: T5 always starts with a kept run and ends with a
hidden one, so a short row's only span is its last tokens; here the kept runs at both ends may be empty and the
spans fall anywhere in the row.

Written here rather than taken from a library: transformers ships the algorithm only inside a Flax example script
(numpy, whole batches of equal length, no per-row seed), and a resumed run must see the same masks, so each row's
mask comes from its own `random.Random`, seeded by the row's text and the recipe's seed.

Sentinels are plain vocabulary entries `<extra_id_0>`, `<extra_id_1>`, ... (the tokenizer stage reserves them): no
merge builds them and they are not added tokens, so ordinary text, even text that spells `<extra_id_0>`, never
tokenizes into one; saved models suppress them in generation (`generation_config.suppress_tokens`).
"""

import random
import zlib

SENTINEL = "<extra_id_{}>"
NOISE_DENSITY = 0.15  # T5's defaults
MEAN_SPAN = 3.0


def sentinel_ids(tokenizer) -> list[int]:
    """The ids of `<extra_id_0>`, `<extra_id_1>`, ... in order, as far as the tokenizer has them."""
    vocab = tokenizer.get_vocab()
    ids = []
    while (token := SENTINEL.format(len(ids))) in vocab:
        ids.append(vocab[token])
    return ids


def span_counts(length: int, noise_density: float, mean_span: float) -> tuple[int, int]:
    """(hidden tokens, spans) for a row of `length` tokens: T5's rounding, at least one token hidden and one kept."""
    if length < 2:
        return 0, 0
    noise = min(max(round(length * noise_density), 1), length - 1)
    return noise, max(1, min(round(noise / mean_span), noise, length - noise + 1))


def corrupted_lengths(length: int, noise_density: float = NOISE_DENSITY, mean_span: float = MEAN_SPAN):
    """(input, target) lengths, [EOS] included, of a corrupted row of `length` tokens (without [EOS])."""
    noise, spans = span_counts(length, noise_density, mean_span)
    return length - noise + spans + 1, noise + spans + 1


def piece_length(max_seq_len: int, noise_density: float = NOISE_DENSITY, mean_span: float = MEAN_SPAN) -> int:
    """The longest row (tokens before [EOS]) whose corrupted input and target both fit in `max_seq_len`: documents
    are cut into pieces of this length (T5's `compute_input_and_target_lengths`, for our rounding)."""
    length = max_seq_len
    while length > 1 and max(corrupted_lengths(length, noise_density, mean_span)) > max_seq_len:
        length -= 1
    while max(corrupted_lengths(length + 1, noise_density, mean_span)) <= max_seq_len:
        length += 1
    return length


def _partition(total: int, parts: int, rng: random.Random, allow_empty_ends: bool = False) -> list[int]:
    """`total` split into `parts` random positive lengths (the first and last may be 0 with `allow_empty_ends`)."""
    if allow_empty_ends:  # two extra units, taken back from the ends: those may then be empty
        lengths = _partition(total + 2, parts, rng)
        lengths[0] -= 1
        lengths[-1] -= 1
        return lengths
    cuts = sorted(rng.sample(range(1, total), parts - 1)) if parts > 1 else []
    edges = [0, *cuts, total]
    return [b - a for a, b in zip(edges, edges[1:])]


def noise_mask(length: int, rng: random.Random, noise_density=NOISE_DENSITY, mean_span=MEAN_SPAN) -> list[bool]:
    """Which of `length` tokens are hidden: `span_counts` spans, kept runs between them of at least one token."""
    noise, spans = span_counts(length, noise_density, mean_span)
    if not spans:
        return [False] * length
    hidden = _partition(noise, spans, rng)
    kept = _partition(length - noise, spans + 1, rng, allow_empty_ends=True)
    mask = [False] * kept[0]
    for span, run in zip(hidden, kept[1:]):
        mask += [True] * span + [False] * run
    return mask


def corrupt(ids: list[int], sentinels: list[int], eos_id: int, rng: random.Random, **shares) -> tuple[list, list]:
    """(input_ids, labels) of `ids` (the text's tokens, without [EOS]): each hidden span replaced by the next
    sentinel in the input; the labels list each sentinel and then its span. Both end in [EOS]."""
    mask = noise_mask(len(ids), rng, **shares)
    inputs, labels, span = [], [], -1
    for position, (token, hidden) in enumerate(zip(ids, mask)):
        if hidden and (position == 0 or not mask[position - 1]):
            span += 1
            if span >= len(sentinels):
                raise ValueError(
                    f"a row of {len(ids)} tokens needs more than the tokenizer's {len(sentinels)} sentinel tokens"
                )
            inputs.append(sentinels[span])
            labels.append(sentinels[span])
        (labels if hidden else inputs).append(token)
    return inputs + [eos_id], labels + [eos_id]


def row_rng(text: str, seed: int, salt: int = 0) -> random.Random:
    """A row's own generator: the same text and seed give the same mask in every epoch, process and resumed run."""
    return random.Random((zlib.crc32(text.encode("utf-8")) * 1_000_003 + seed) * 7919 + salt)


def pieces(ids: list[int], length: int) -> list[list[int]]:
    """`ids` cut into consecutive pieces of `length` tokens; a last piece shorter than a quarter of it is dropped
    (too short to hide a span in), unless it is the only one."""
    cut = [ids[i : i + length] for i in range(0, len(ids), length)] or [[]]
    if len(cut) > 1 and len(cut[-1]) < max(2, length // 4):
        cut.pop()
    return cut


def expected_spans(max_seq_len: int, noise_density: float = NOISE_DENSITY, mean_span: float = MEAN_SPAN) -> int:
    """The most spans a piece of `piece_length(max_seq_len)` tokens gets: the sentinels a tokenizer needs."""
    return span_counts(piece_length(max_seq_len, noise_density, mean_span), noise_density, mean_span)[1]
