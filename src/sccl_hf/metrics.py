"""Scores of generated answers against references."""

import unicodedata


def normalize_answer(text: str) -> str:
    """NFKC, outer whitespace and a final full stop removed: "杭州。" and "杭州" are the same answer."""
    return unicodedata.normalize("NFKC", text).strip().rstrip("。.")


def exact_match(predictions: list[str], references: list[str]) -> float:
    """The share of predictions equal to their reference after `normalize_answer`."""
    same = sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references))
    return same / max(len(references), 1)
