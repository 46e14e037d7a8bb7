"""Stage `eval_choice`: C-Eval or CMMLU multiple choice through lm-evaluation-harness, on local files.

Reads: a model directory, a folder in C-Eval's layout (`<split>/<subject>_<split>.csv`, and `dev/` for few-shot
examples). Writes, in `output_dir`: `predictions_<method>.jsonl` (per question: subject, prompt, the four scores,
the chosen and the right letter) and `results.md`; accuracy per subject, per category and overall, with question
counts, goes to `results.json`. Scoring methods (`sccl_hf/choice_eval.py` says how each is made fair):
`loglikelihood` (the harness's) and `first_token` (ChatLM-mini-Chinese's).
"""

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


# 1. arguments
@dataclass
class ChoiceEvalArguments:
    model_name_or_path: str = field(default="", metadata={"help": "the model directory to evaluate"})
    benchmark: str = field(default="ceval", metadata={"help": "ceval or cmmlu (subjects, categories, prompt)"})
    data_dir: str = field(default="", metadata={"help": "a folder in C-Eval's layout: <split>/<subject>_<split>.csv"})
    split: str | None = field(default=None, metadata={"help": "the split to score (default: ceval val, cmmlu test)"})
    subjects: list[str] = field(default_factory=list, metadata={"help": "subjects to score (default: all)"})
    num_fewshot: int = field(default=0, metadata={"help": "k-shot: the first k dev questions of the same subject"})
    methods: list[str] = field(
        default_factory=lambda: ["loglikelihood", "first_token"], metadata={"help": "loglikelihood, first_token"}
    )
    max_questions: int = field(default=0, metadata={"help": "score only the first questions of each subject (0: all)"})
    output_dir: str = "runs/eval/ceval"
    batch_size: int = 16
    device: str = field(default="auto", metadata={"help": "auto (GPU when present), cpu, cuda, ..."})
    seed: int = 1234

    def __post_init__(self):
        from sccl_hf.choice_eval import BENCHMARKS, METHODS, subject_file
        from sccl_hf.model_folder import model_reference_problem

        if problem := model_reference_problem(self.model_name_or_path, "model_name_or_path"):
            raise FileNotFoundError(problem)
        if self.benchmark not in BENCHMARKS:
            raise ValueError(f"benchmark: must be one of {', '.join(BENCHMARKS)}, got '{self.benchmark}'")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods: each must be one of {', '.join(METHODS)}, got {self.methods}")
        if not self.data_dir or not Path(self.data_dir).is_dir():
            raise FileNotFoundError(f"data_dir: no such folder: '{self.data_dir}'")
        known = BENCHMARKS[self.benchmark].subjects
        unknown = [s for s in self.subjects if s not in known]
        if unknown:
            raise ValueError(f"subjects: not {self.benchmark} subjects: {', '.join(unknown)}")
        if self.num_fewshot < 0:
            raise ValueError("num_fewshot: 0 or more")
        self.split = self.split or BENCHMARKS[self.benchmark].default_split
        self.subjects = self.subjects or list(known)
        splits = [self.split, "dev"] if self.num_fewshot else [self.split]
        missing = [str(subject_file(self.data_dir, sp, s)) for s in self.subjects for sp in splits]
        missing = [p for p in missing if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"data_dir: {len(missing)} subject file(s) missing, e.g. {missing[:3]}")


RECIPE_ARGUMENTS = (ChoiceEvalArguments,)


def main(args: ChoiceEvalArguments) -> dict:

    from sccl_hf import choice_eval
    from sccl_hf.engine import pick_device
    from sccl_hf.model import load_config, load_tokenizer, model_max_len
    from sccl_hf.model_folder import local_model_dir

    benchmark = choice_eval.BENCHMARKS[args.benchmark]
    # 2. inputs: one harness task per subject, and the share of each right answer (what a one-letter model scores)
    tasks = [
        choice_eval.task_config(benchmark, Path(args.data_dir), args.split, s, args.num_fewshot) for s in args.subjects
    ]
    answers = Counter()
    for subject in args.subjects:
        rows = choice_eval.read_questions(choice_eval.subject_file(args.data_dir, args.split, subject))
        answers.update(r["answer"] for r in rows[: args.max_questions or None])
    # 3. model: the harness loads the folder (a hub id is downloaded first); our loader checks the tokenizer
    device, dtype = pick_device(args.device)
    model_dir = local_model_dir(args.model_name_or_path)
    tokenizer = load_tokenizer(model_dir)
    max_len = model_max_len(load_config(model_dir))
    loaded = None
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    results = {
        "benchmark": args.benchmark,
        "split": args.split,
        "num_fewshot": args.num_fewshot,
        "model": args.model_name_or_path,
        "answer_share": {k: answers[k] / max(sum(answers.values()), 1) for k in choice_eval.LETTERS},
        "methods": {},
    }
    # 4. work: the harness, once per scoring method
    results["choice_tokens"] = choice_eval.check_choice_tokens(tokenizer)
    for method in args.methods:
        print(f"eval_choice: {args.benchmark} {args.split}, {len(tasks)} subjects, {args.num_fewshot}-shot, {method}")
        lm = choice_eval.harness_model(
            model_dir, tokenizer, method, args.batch_size, max_len, str(device), dtype, loaded
        )
        loaded = lm.model
        samples, _ = choice_eval.run_harness(lm, tasks, args.num_fewshot, args.max_questions or None, args.seed)
        subjects, truncated = [], 0
        with open(output / f"predictions_{method}.jsonl", "w", encoding="utf-8") as f:
            for subject in args.subjects:
                rows = samples[f"{args.benchmark}_{subject}"]
                for row in rows:
                    scores = [float(r[0]) for r in row["filtered_resps"]]
                    prompt = row["arguments"][0][0]
                    truncated += len(tokenizer(prompt)["input_ids"]) > max_len
                    chosen = choice_eval.LETTERS[scores.index(max(scores))]
                    record = {
                        "subject": subject,
                        "doc_id": row["doc_id"],
                        "prompt": prompt,
                        "scores": scores,
                        "chosen": chosen,
                        "answer": row["doc"]["answer"],
                        "correct": bool(row["acc"]),
                    }
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
                category = benchmark.subjects[subject][1]
                subjects.append(
                    choice_eval.SubjectResult(subject, category, len(rows), sum(int(r["acc"]) for r in rows))
                )
        summary = choice_eval.summarize(benchmark, subjects)
        # The harness cuts a prompt longer than the model's limit from the left: the question stays, the
        # description and the first few-shot examples go.
        summary["prompts_cut_to_max_seq_len"] = truncated
        summary["subjects"] = {s.subject: {"accuracy": s.accuracy, "questions": s.questions} for s in subjects}
        results["methods"][method] = summary
        overall = summary["overall"]
        print(f"eval_choice: {method}: accuracy {overall['accuracy']:.2%} on {overall['questions']} questions")
    # 5. save: one markdown table per view (overall and categories, then subjects), a column per method
    (output / "results.md").write_text(choice_markdown(args, results), encoding="utf-8")
    # 6. summary
    return results


def choice_markdown(args: ChoiceEvalArguments, results: dict) -> str:
    from sccl_hf.metrics import markdown_table

    methods = list(results["methods"])

    def percent(value):
        return "-" if value is None else f"{value:.2%}"

    first = results["methods"][methods[0]]
    groups = [("overall", first["overall"])] + list(first["categories"].items())
    group_rows = [
        [name, group["questions"]]
        + [percent((results["methods"][m]["overall"] if name == "overall" else results["methods"][m]["categories"][name])["accuracy"]) for m in methods]
        for name, group in groups
    ]  # fmt: skip
    subject_rows = [
        [subject, first["subjects"][subject]["questions"]]
        + [percent(results["methods"][m]["subjects"][subject]["accuracy"]) for m in methods]
        for subject in first["subjects"]
    ]
    shares = ", ".join(f"{k} {v:.1%}" for k, v in results["answer_share"].items())
    return (
        f"# {args.benchmark} ({args.split}, {args.num_fewshot}-shot): {args.model_name_or_path}\n\n"
        f"Right answers: {shares} (a model that always picks one letter scores that letter's share).\n\n"
        + markdown_table(["group", "questions", *methods], group_rows)
        + "\n\n## Subjects\n\n"
        + markdown_table(["subject", "questions", *methods], subject_rows)
        + "\n"
    )
