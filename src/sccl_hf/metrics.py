"""Scores of generated answers against references.

BLEU and ROUGE come from the libraries the `evaluate` metrics wrap (sacrebleu, rouge_score), called directly:
`evaluate.load("bleu")` fetches its metric code from the Hub at load time, which fails offline.
"""

import unicodedata


def normalize_answer(text: str) -> str:
    """NFKC, outer whitespace and a final full stop removed: "杭州。" and "杭州" are the same answer."""
    return unicodedata.normalize("NFKC", text).strip().rstrip("。.")


def exact_match(predictions: list[str], references: list[str]) -> float:
    """The share of predictions equal to their reference after `normalize_answer`."""
    same = sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references))
    return same / max(len(references), 1)


def bleu4_chars(predictions: list[str], references: list[str]) -> float:
    """Mean sentence BLEU-4 over characters, from 0 to 1 (sacrebleu: the `char` tokenizer, every character a
    token; effective order, so an answer shorter than four characters is scored on the n-grams it has: corpus
    BLEU-4 of short answers such as "杭州" is 0 whatever they are)."""
    from sacrebleu.metrics import BLEU

    if not predictions:
        return 0.0
    bleu = BLEU(tokenize="char", effective_order=True)
    return sum(bleu.sentence_score(p, [r]).score for p, r in zip(predictions, references)) / len(predictions) / 100


class _CharTokens:
    """rouge_score's default tokenizer keeps only [a-z0-9]: it would drop every Chinese character."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return [c for c in text if not c.isspace()]


def rouge_l_chars(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F-measure over characters, from 0 to 1."""
    from rouge_score.rouge_scorer import RougeScorer

    if not predictions:
        return 0.0
    scorer = RougeScorer(["rougeL"], tokenizer=_CharTokens())
    return sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)) / len(predictions)


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub markdown table (floats to 4 significant digits)."""

    def cell(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
