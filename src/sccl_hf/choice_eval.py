"""Multiple-choice exams (C-Eval, CMMLU) through lm-evaluation-harness, on local files.

The harness's own C-Eval and CMMLU task cards load hub datasets whose loading scripts no longer run under datasets
4, so the tasks are defined here, with the harness's prompts (`description`, `doc_to_text`), reading a folder in
C-Eval's layout: `<split>/<subject>_<split>.csv` with columns id, question, A, B, C, D, answer. Few-shot examples are
the first k rows of the subject's `dev` split (the harness's `first_n` sampler, as C-Eval's own code does).

The model runs through the harness's HF backend in seq2seq mode: the prompt goes to the encoder, each choice is
scored by the decoder. Two scoring methods, same prompts:

- `loglikelihood` (the harness's): the log-probability of the choice as the model would write it as an answer,
  the letter and its closing [EOS] (our tokenizer ends every encoded text in [EOS], as in training). The
  harness puts a delimiter before the choice; in seq2seq the answer starts the decoder, so there is none
  (`target_delimiter: ""`): " A" would score a space token that no answer in training starts with.
  `check_choice_tokens` checks that each letter is one token of its own, so all four choices are scored on the
  same number of tokens.
- `first_token` (ChatLM-mini-Chinese's C-Eval notebook, which gave its published 23.25%): the choice whose letter
  has the highest logit at the decoder's first step. The log-softmax at that step ranks the letters as the raw
  logits do, so the harness's argmax picks the same letter.
"""

import csv
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from sccl_hf.errors import SCCLError
from sccl_hf.eval_subjects import CEVAL_HARD, CEVAL_SUBJECTS, CMMLU_CHINA_SPECIFIC, CMMLU_SUBJECTS

LETTERS = ("A", "B", "C", "D")
METHODS = ("loglikelihood", "first_token")


@dataclass(frozen=True)
class Benchmark:
    name: str
    subjects: dict  # {subject: (Chinese name, category)}
    extra_groups: dict  # {group: [subjects]}, reported beside the categories
    default_split: str  # the split with answers to score on
    description: str  # the harness's, with {subject} for the Chinese name


BENCHMARKS = {
    "ceval": Benchmark(
        "ceval",
        CEVAL_SUBJECTS,
        {"Hard": CEVAL_HARD},
        "val",
        "以下是中国关于{subject}的单项选择题，请选出其中的正确答案。\n\n",
    ),
    "cmmlu": Benchmark(
        "cmmlu",
        CMMLU_SUBJECTS,
        {"China specific": CMMLU_CHINA_SPECIFIC},
        "test",
        "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n",
    ),
}


def subject_file(data_dir: Path, split: str, subject: str) -> Path:
    return Path(data_dir) / split / f"{subject}_{split}.csv"


def read_questions(path: Path) -> list[dict]:
    """A subject's questions, every field as text. A missing column or an answer that is not A-D is an error
    naming the file and row."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = {"question", *LETTERS, "answer"} - set(reader.fieldnames or [])
            if missing:
                raise SCCLError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
            rows = []
            for line, row in enumerate(reader, start=2):
                if (row.get("answer") or "").strip() not in LETTERS:
                    raise SCCLError(f"{path}, row {line}: answer must be one of A, B, C, D, got {row.get('answer')!r}")
                rows.append({k: (v or "").strip() for k, v in row.items() if k is not None})
    except UnicodeDecodeError as error:
        raise SCCLError(f"{path}: not UTF-8 text ({error})") from error
    return rows


def task_config(benchmark: Benchmark, data_dir: Path, split: str, subject: str, num_fewshot: int) -> dict:
    """The harness task for one subject (the harness's C-Eval/CMMLU prompt), reading the local files."""
    splits = {split: subject_file(data_dir, split, subject)}
    if num_fewshot:
        splits["dev"] = subject_file(data_dir, "dev", subject)

    def load(**_):
        import datasets

        return datasets.DatasetDict({name: datasets.Dataset.from_list(read_questions(p)) for name, p in splits.items()})

    return {
        "task": f"{benchmark.name}_{subject}",
        "custom_dataset": load,
        "test_split": split,
        "fewshot_split": "dev" if num_fewshot else None,
        "fewshot_config": {"sampler": "first_n"},
        "description": benchmark.description.format(subject=benchmark.subjects[subject][0]),
        "output_type": "multiple_choice",
        "doc_to_text": "{{question}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\n答案：",
        "doc_to_choice": list(LETTERS),
        "doc_to_target": "{{['A', 'B', 'C', 'D'].index(answer)}}",
        "target_delimiter": "",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def check_choice_tokens(tokenizer) -> dict[str, list[int]]:
    """What each answer letter encodes to. Fair scoring needs each letter to be one token of its own, followed
    by [EOS]; `first_token` cannot tell letters apart otherwise, so it refuses."""
    encodings = {letter: tokenizer(letter)["input_ids"] for letter in LETTERS}
    eos = tokenizer.eos_token_id
    one_token = all(len(ids) == 2 and ids[-1] == eos for ids in encodings.values())
    distinct = len({ids[0] for ids in encodings.values()}) == len(LETTERS)
    if not distinct:
        raise SCCLError(f"the answer letters share a first token ({encodings}): the choices cannot be scored apart")
    if not one_token:
        logging.getLogger(__name__).warning(
            "the answer letters do not each encode to [letter, EOS] (%s): loglikelihood scores choices of "
            "different token counts",
            encodings,
        )
    return encodings


def harness_model(model_dir, tokenizer, method: str, batch_size: int, max_length: int, device: str, dtype, loaded=None):
    """The harness's HF model in seq2seq mode. The first call loads the model folder itself
    (`AutoModelForSeq2SeqLM` with `trust_remote_code`, the folder's own code); pass its `.model` as `loaded` to
    reuse it. `first_token` scores only the first token of each choice."""
    from lm_eval.models.huggingface import HFLM

    # The harness warns once per task (custom datasets) and about a model passed as an object: expected here.
    for name in ("lm-eval", "lm_eval"):
        logging.getLogger(name).setLevel(logging.ERROR)

    class FirstTokenHFLM(HFLM):
        def _encode_pair(self, context, continuation):
            context_enc, continuation_enc = super()._encode_pair(context, continuation)
            return context_enc, continuation_enc[:1]

    cls = FirstTokenHFLM if method == "first_token" else HFLM
    common = dict(tokenizer=tokenizer, backend="seq2seq", batch_size=batch_size, max_length=max_length)
    if loaded is not None:
        return cls(pretrained=loaded, **common)
    return cls(pretrained=str(model_dir), trust_remote_code=True, device=device, dtype=dtype, **common)


@dataclass
class SubjectResult:
    subject: str
    category: str
    questions: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.questions if self.questions else 0.0


def run_harness(lm, tasks: list[dict], num_fewshot: int, limit: int | None, seed: int) -> tuple[dict, dict]:
    """Run the harness on `tasks`; returns ({task: [per-question samples]}, the harness's results dict)."""

    import lm_eval.api.task
    from lm_eval import evaluator
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks import TaskManager
    from tqdm import tqdm

    task_objects = [ConfigurableTask(config=config) for config in tasks]
    # The harness draws a progress bar per task while it builds the prompts (52 lines for C-Eval, 67 for CMMLU);
    # its own switch for that does not exist, so those bars are turned off here, and the one bar that matters,
    # over all the scoring requests, stays.
    with mock.patch.object(lm_eval.api.task, "tqdm", functools.partial(tqdm, disable=True)):
        output = evaluator.simple_evaluate(
            model=lm,
            tasks=task_objects,
            num_fewshot=num_fewshot,
            limit=limit,
            bootstrap_iters=0,
            log_samples=True,
            task_manager=TaskManager(include_defaults=False),
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
            verbosity="ERROR",
        )
    return output["samples"], output["results"]


def summarize(benchmark: Benchmark, subjects: list[SubjectResult]) -> dict:
    """Accuracy per category, per extra group (Hard, China specific) and overall, with question counts. Overall
    and group accuracies are over questions (the harness's weight_by_size); the subject mean is beside them."""

    def group(members: list[SubjectResult]) -> dict:
        questions, correct = sum(s.questions for s in members), sum(s.correct for s in members)
        return {"accuracy": correct / questions if questions else None, "questions": questions}

    categories = sorted({s.category for s in subjects})
    summary = {
        "overall": group(subjects),
        "subject_mean": sum(s.accuracy for s in subjects) / len(subjects) if subjects else None,
        "categories": {c: group([s for s in subjects if s.category == c]) for c in categories},
    }
    for name, members in benchmark.extra_groups.items():
        chosen = [s for s in subjects if s.subject in members]
        if chosen:
            summary["categories"][name] = group(chosen)
    return summary
