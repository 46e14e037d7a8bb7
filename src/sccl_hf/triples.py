"""Triples `[(s,p,o),(s,p,o)]`, as ChatLM-mini-Chinese's DuIE fine-tuning writes them: parsing model output
and scoring it against references.

Hand-written because no library parses this ad-hoc format: split at the "),(" boundaries, lenient about
spaces and a missing closing `]`. Only ASCII brackets and commas are structure (DuIE's entities hold full-width
ones: `没关系，是爱情啊`, `康熙帝国（上下）`).
"""

import re
from collections import Counter
from dataclasses import dataclass, field

_BETWEEN = re.compile(r"\)\s*,\s*\(")  # the boundary between two triples: "),("

Triple = tuple[str, str, str]


@dataclass
class Parsed:
    triples: list[Triple]
    status: str  # "ok", "truncated" (complete triples kept, the rest cut off) or "malformed" (no triples)


def parse_triples(text: str) -> Parsed:
    """The triples in a model's answer.

    - well formed, `[(s,p,o),...]` or `[]`: all its triples;
    - truncated (the answer was cut before its closing `]`): the complete `(s,p,o)` groups before the cut;
    - anything else (no brackets, a group without three parts, text around the list): no triples, malformed.

    Entities may hold brackets and commas of their own (`聚光科技(杭州)股份有限公司`, `568,800`): triples are
    split at "),(" only, and a triple's parts at its first two commas (the object keeps any further ones).
    """
    text = text.strip()
    if re.fullmatch(r"\[\s*\]", text):
        return Parsed([], "ok")
    if not text.startswith("[("):
        return Parsed([], "malformed")
    closed = text.endswith("]")
    if (closed and not re.search(r"\)\s*\]$", text)) or (not closed and re.search(r"\)\s*\]", text)):
        return Parsed([], "malformed")  # "[(a,b,c]", or text after the closing "]"
    body = re.sub(r"\)\s*\]$", "", text[2:]) if closed else text[2:]
    pieces = _BETWEEN.split(body)
    if not closed:  # cut off: the last piece is complete only if its ")" made it
        last = pieces.pop().rstrip(", ")
        if last.endswith(")"):
            pieces.append(last[:-1])
    triples = [_split(piece) for piece in pieces]
    if not all(triples):
        return Parsed([], "malformed")
    return Parsed(list(dict.fromkeys(triples)), "ok" if closed else "truncated")


def _split(piece: str) -> Triple | None:
    parts = piece.split(",", 2)
    parts = [p.strip() for p in parts]
    return tuple(parts) if len(parts) == 3 and all(parts) else None


@dataclass
class TripleScores:
    """Exact-match counts: a predicted triple is right when subject, predicate and object all equal a reference's."""

    predicted: int = 0
    reference: int = 0
    correct: int = 0
    by_predicate: dict = field(default_factory=dict)  # {predicate: TripleScores}

    def add(self, predicted: list[Triple], reference: list[Triple], per_predicate: bool = True) -> None:
        correct, predicted_count, reference_count = row_counts(predicted, reference)
        self.predicted += predicted_count
        self.reference += reference_count
        self.correct += correct
        if per_predicate:
            for predicate in {t[1] for t in predicted} | {t[1] for t in reference}:
                scores = self.by_predicate.setdefault(predicate, TripleScores())
                scores.add(
                    [t for t in predicted if t[1] == predicate], [t for t in reference if t[1] == predicate], False
                )

    @property
    def precision(self) -> float:
        return self.correct / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:
        return self.correct / self.reference if self.reference else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "predicted": self.predicted,
            "reference": self.reference,
            "correct": self.correct,
        }


def status_counts(parsed: list[Parsed]) -> dict[str, int]:
    counts = Counter(p.status for p in parsed)
    return {status: counts.get(status, 0) for status in ("ok", "truncated", "malformed")}


def row_counts(predicted: list[Triple], reference: list[Triple]) -> tuple[int, int, int]:
    """(correct, predicted, reference) for one sentence, repeated triples counted once: what `TripleScores.add`
    adds up and what the paired bootstrap resamples."""
    predicted, reference = list(dict.fromkeys(predicted)), list(dict.fromkeys(reference))
    return len(set(predicted) & set(reference)), len(predicted), len(reference)


def paired_bootstrap_f1(counts_a, counts_b, samples: int = 2000, seed: int = 0) -> dict:
    """F1 of system A minus F1 of system B on the same sentences, with a paired bootstrap 95% interval.

    `counts_a`, `counts_b`: (correct, predicted, reference) per sentence, in the same sentence order. Each of
    `samples` resamples draws sentences with replacement (the same draw for both systems, so they are compared on
    the same sentences) and recomputes corpus-level F1 from the summed counts; the interval is the 2.5th and
    97.5th percentiles of the differences. Written with numpy because F1 over summed counts is not a mean of
    per-row values, which is what scipy's bootstrap helpers expect."""
    import numpy as np

    a, b = np.asarray(counts_a, dtype=np.int64), np.asarray(counts_b, dtype=np.int64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"paired bootstrap: counts for {len(a)} and {len(b)} sentences; both need the same sentences")

    def f1(sums):  # sums[..., (correct, predicted, reference)]
        correct, predicted, reference = sums[..., 0], sums[..., 1], sums[..., 2]
        total = predicted + reference
        return np.divide(2 * correct, total, out=np.zeros(correct.shape, dtype=float), where=total > 0)

    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(a), size=(samples, len(a)))
    weights = np.stack([np.bincount(d, minlength=len(a)) for d in draws])  # how often each sentence was drawn
    differences = f1(weights @ a) - f1(weights @ b)
    low, high = np.percentile(differences, [2.5, 97.5])
    return {
        "f1_difference": float(f1(a.sum(0)) - f1(b.sum(0))),
        "interval_95": [float(low), float(high)],
        "excludes_zero": bool(low > 0 or high < 0),
        "samples": samples,
        "sentences": len(a),
    }


def entities_in_sentence(sentences: list[str], predicted: list[list[Triple]]) -> float | None:
    """The share of predicted subjects and objects that appear verbatim in their sentence (None: none predicted).
    Entities are copied from the sentence, so one that is not there was invented: a model that has not learnt
    to read its input writes well-formed triples with the right predicates and made-up names (issue 22)."""
    entities = [(e, s) for s, triples in zip(sentences, predicted) for t in triples for e in (t[0], t[2])]
    return sum(e in s for e, s in entities) / len(entities) if entities else None
