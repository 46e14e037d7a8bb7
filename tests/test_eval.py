"""Evaluation stages: multiple choice through lm-evaluation-harness, perplexity, generation metrics, triple
extraction, and the report card."""

import csv
import json
import math

import pytest
import torch

from conftest import write_parquet
from sccl_hf.stages import run_recipe

LETTERS = "ABCD"


def write_exam(folder, subject, split, answers, tag):
    """A subject file in C-Eval's layout; each question names its subject, split and number."""
    (folder / split).mkdir(parents=True, exist_ok=True)
    with open(folder / split / f"{subject}_{split}.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "question", "A", "B", "C", "D", "answer"])
        for i, answer in enumerate(answers):
            writer.writerow([i, f"{tag}{split}题{i}：下面哪一个是对的？", "甲", "乙", "丙", "丁", answer])


@pytest.fixture(scope="module")
def exam_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exam")
    write_exam(folder, "logic", "val", "ABADCAB", "逻辑")  # 3 of 7 answers are A
    write_exam(folder, "logic", "dev", "DCBAD", "逻辑")
    write_exam(folder, "law", "val", "CCAD", "法学")  # 1 of 4
    write_exam(folder, "law", "dev", "ABCDA", "法学")
    return folder


@pytest.fixture(scope="module")
def model_preferring_a(tiny_model_dir, tmp_path_factory):
    """A model rigged so that "A" has the highest logit at every decoder step, whatever the input: every token's
    embedding is c * e0 (c = 3 for "A", 1 for the others), the decoder's attention and feed-forward outputs are
    zero, and its final norm keeps dimension 0 only. So the decoder's output is the same at every step, the
    logits equal c, and "A[EOS]" beats "B[EOS]" (the [EOS] step scores the same for every choice)."""
    from sccl_hf.model import load_model, load_tokenizer, save_model_dir

    model, tokenizer = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    letter_a = tokenizer("A")["input_ids"][0]
    with torch.no_grad():
        model.shared.weight.zero_()
        model.shared.weight[:, 0] = 1.0
        model.shared.weight[letter_a, 0] = 3.0
        for block in model.decoder.block:
            block.layer[0].SelfAttention.o.weight.zero_()
            block.layer[1].EncDecAttention.o.weight.zero_()
            block.layer[2].DenseReluDense.wo.weight.zero_()
        model.decoder.final_layer_norm.weight.zero_()
        model.decoder.final_layer_norm.weight[0] = 1.0
    return save_model_dir(model, tokenizer, tmp_path_factory.mktemp("prefers_a"))


def choice_recipe(tmp_path, model_dir, data_dir, *extra):
    recipe = tmp_path / "choice.yaml"
    recipe.write_text(f"stage: eval_choice\nmodel_name_or_path: {model_dir}\ndata_dir: {data_dir}\n", encoding="utf-8")
    return run_recipe(recipe, ["--output_dir", str(tmp_path / "out"), *extra])


@pytest.mark.parametrize("shots", ["0", "2"])
def test_a_model_that_always_prefers_a_scores_the_share_of_a_answers(tmp_path, exam_dir, model_preferring_a, shots):
    results = choice_recipe(
        tmp_path, model_preferring_a, exam_dir, "--subjects", "logic", "law", "--num_fewshot", shots
    )
    assert results["answer_share"]["A"] == pytest.approx(4 / 11)
    for method in ("loglikelihood", "first_token"):
        summary = results["methods"][method]
        assert summary["overall"] == {"accuracy": pytest.approx(4 / 11), "questions": 11}
        assert summary["subjects"]["logic"] == {"accuracy": pytest.approx(3 / 7), "questions": 7}
        assert summary["subjects"]["law"] == {"accuracy": pytest.approx(1 / 4), "questions": 4}
        assert summary["categories"]["Humanities"]["questions"] == 11  # both are C-Eval Humanities subjects
        predictions = [json.loads(line) for line in open(tmp_path / "out" / f"predictions_{method}.jsonl")]
        assert {p["chosen"] for p in predictions} == {"A"} and len(predictions) == 11
    table = (tmp_path / "out" / "results.md").read_text(encoding="utf-8")
    assert "| overall | 11 | 36.36% | 36.36% |" in table
    assert results["choice_tokens"]["A"][-1] == 1  # the letter, then [EOS]


def test_k_shot_prompts_hold_the_first_k_dev_questions_of_the_same_subject(tmp_path, exam_dir, tiny_model_dir):
    choice_recipe(tmp_path, tiny_model_dir, exam_dir, "--subjects", "logic", "law", "--num_fewshot", "3",
                  "--methods", "first_token")  # fmt: skip
    predictions = [json.loads(line) for line in open(tmp_path / "out" / "predictions_first_token.jsonl")]
    dev_answers = {"logic": "DCBAD", "law": "ABCDA"}
    for p in predictions:
        tag, other = ("逻辑", "法学") if p["subject"] == "logic" else ("法学", "逻辑")
        assert p["prompt"].count(f"{tag}dev题") == 3 and other not in p["prompt"]
        for i in range(3):  # each example shows its answer
            assert (
                f"{tag}dev题{i}：下面哪一个是对的？\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案：{dev_answers[p['subject']][i]}"
                in p["prompt"]
            )
        assert p["prompt"].endswith(f"{tag}val题{p['doc_id']}：下面哪一个是对的？\nA. 甲\nB. 乙\nC. 丙\nD. 丁\n答案：")
        assert p["prompt"].startswith(
            "以下是中国关于逻辑学的单项选择题" if tag == "逻辑" else "以下是中国关于法学的单项选择题"
        )


def test_exam_files_are_checked_before_anything_loads(tmp_path, exam_dir, tiny_model_dir):
    with pytest.raises(SystemExit):
        choice_recipe(tmp_path, tiny_model_dir, exam_dir)  # all 52 subjects asked for, 2 present
    with pytest.raises(SystemExit):
        choice_recipe(tmp_path, tiny_model_dir, exam_dir, "--subjects", "astrology")
    bad = tmp_path / "bad"
    write_exam(bad, "logic", "val", "AB", "逻辑")
    (bad / "val" / "logic_val.csv").write_text("id,question,A,B,C,D,answer\n0,q,a,b,c,d,E\n", encoding="utf-8")
    with pytest.raises(SystemExit) as error:
        choice_recipe(tmp_path, tiny_model_dir, bad, "--subjects", "logic")
    assert error.value.code == 1


@pytest.mark.slow
def test_a_random_model_is_at_chance_on_ceval_val(tmp_path, shared_data, tiny_model_dir):
    results = choice_recipe(tmp_path, tiny_model_dir, shared_data / "eval" / "ceval", "--methods", "first_token",
                            "--batch_size", "64")  # fmt: skip
    overall = results["methods"]["first_token"]["overall"]
    assert overall["questions"] == 1346
    assert 0.20 <= overall["accuracy"] <= 0.30  # chance is 25%; a one-letter model scores 23-26% here
    assert len(results["methods"]["first_token"]["categories"]) == 5  # four categories and Hard


def test_perplexity_equals_a_hand_computation(tmp_path, trained_model_dir):
    from sccl_hf.model import load_model, load_tokenizer

    rows = [{"prompt": "浙江的省会是哪里？", "response": "杭州"}, {"prompt": "3加5等于多少？", "response": "八加"}]
    table = write_parquet(tmp_path / "two.parquet", rows)
    recipe = tmp_path / "ppl.yaml"
    recipe.write_text(f"stage: eval_ppl\nmodel_name_or_path: {trained_model_dir}\neval_files: [{table}]\n")
    results = run_recipe(recipe, ["--output_dir", str(tmp_path / "out")])

    model, tokenizer = load_model(trained_model_dir).eval(), load_tokenizer(trained_model_dir)
    nll, tokens = 0.0, 0
    for row in rows:
        prompt = tokenizer(row["prompt"], return_tensors="pt")
        target = tokenizer(row["response"])["input_ids"]  # ends in [EOS]
        decoder_input = torch.tensor([[model.config.decoder_start_token_id, *target[:-1]]])
        with torch.no_grad():
            logits = model(**prompt, decoder_input_ids=decoder_input).logits[0]
        log_probs = logits.log_softmax(-1)
        nll -= sum(log_probs[i, t].item() for i, t in enumerate(target))
        tokens += len(target)
    assert results["tokens"] == tokens and results["characters"] == 4 and results["rows"] == 2
    assert results["loss"] == pytest.approx(nll / tokens, rel=1e-5)
    assert results["perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-5)
    assert results["bits_per_character"] == pytest.approx(nll / math.log(2) / 4, rel=1e-5)
    assert "| 2 | " in (tmp_path / "out" / "results.md").read_text(encoding="utf-8")


def test_generation_metrics_and_eos_share(tmp_path, trained_model_dir, fixed_rows_file):
    from sccl_hf.metrics import bleu4_chars, rouge_l_chars

    assert bleu4_chars(["杭州是浙江的省会"], ["杭州是浙江的省会"]) == pytest.approx(1.0)
    assert bleu4_chars(["一二三四"], ["五六七八"]) == 0.0
    assert bleu4_chars(["杭州"], ["杭州"]) == pytest.approx(1.0)  # short answers count (effective order)
    assert rouge_l_chars(["杭州是浙江的省会"], ["杭州是浙江省的省会"]) == pytest.approx(2 * 8 / (8 + 9))
    recipe = tmp_path / "gen.yaml"
    recipe.write_text(f"stage: eval_gen\nmodel_name_or_path: {trained_model_dir}\neval_files: [{fixed_rows_file}]\n")
    full = run_recipe(recipe, ["--output_dir", str(tmp_path / "full")])
    cut = run_recipe(recipe, ["--output_dir", str(tmp_path / "cut"), "--max_new_tokens", "1"])
    assert full["ended_with_eos"] == 1.0 and full["exact_match"] == 1.0  # it learned the four rows
    assert full["bleu4"] == pytest.approx(1.0) and full["rouge_l"] == pytest.approx(1.0)
    assert cut["ended_with_eos"] == 0.0  # one token is never an answer plus its [EOS]
    predictions = [json.loads(line) for line in open(tmp_path / "cut" / "predictions.jsonl")]
    assert [p["ended"] for p in predictions] == [False] * 4


@pytest.mark.parametrize(
    "text, triples, status",
    [
        ("[(邪少兵王,作者,冰火未央)]", [("邪少兵王", "作者", "冰火未央")], "ok"),
        ("[(a,b,c), (d,e,f)]", [("a", "b", "c"), ("d", "e", "f")], "ok"),
        ("[]", [], "ok"),
        ("[(聚光科技(杭州)股份有限公司,董事长,叶华俊)]", [("聚光科技(杭州)股份有限公司", "董事长", "叶华俊")], "ok"),
        ("[(哈卡斯共和国,人口数量,568,800)]", [("哈卡斯共和国", "人口数量", "568,800")], "ok"),
        ("[(没关系，是爱情啊,编剧,卢熙京)]", [("没关系，是爱情啊", "编剧", "卢熙京")], "ok"),
        ("[(a,b,c),(a,b,c)]", [("a", "b", "c")], "ok"),
        ("[(a,b,c),(d,e", [("a", "b", "c")], "truncated"),
        ("[(a,b,c),", [("a", "b", "c")], "truncated"),
        ("[(a,b,c)", [("a", "b", "c")], "truncated"),
        ("[(a,b", [], "truncated"),
        ("这句话没有三元组", [], "malformed"),
        ("", [], "malformed"),
        ("[(a,b)]", [], "malformed"),
        ("[(a,b,c)] 多余的话", [], "malformed"),
        ("[(a,b,c]", [], "malformed"),
        ("(a,b,c)", [], "malformed"),
    ],
)
def test_triples_parse_well_formed_truncated_and_garbage_output(text, triples, status):
    from sccl_hf.triples import parse_triples

    parsed = parse_triples(text)
    assert (parsed.triples, parsed.status) == (triples, status)


def test_triple_scores_overall_and_per_predicate():
    from sccl_hf.triples import TripleScores

    scores = TripleScores()
    scores.add([("甲", "作者", "乙"), ("甲", "主演", "丙")], [("甲", "作者", "乙"), ("丁", "作者", "戊")])
    scores.add([], [("己", "导演", "庚")])  # a malformed answer: no triples
    assert (scores.predicted, scores.reference, scores.correct) == (2, 3, 1)
    assert scores.precision == 0.5 and scores.recall == pytest.approx(1 / 3) and scores.f1 == pytest.approx(0.4)
    assert scores.by_predicate["作者"].as_dict()["recall"] == 0.5
    assert scores.by_predicate["主演"].precision == 0.0 and scores.by_predicate["导演"].recall == 0.0


def test_entities_in_sentence_counts_subjects_and_objects_found_verbatim():
    from sccl_hf.triples import entities_in_sentence

    sentences = ["《红楼梦》的作者是曹雪芹。", "周杰伦出生于台湾。"]
    predicted = [[("红楼梦", "作者", "曹雪芹"), ("红楼", "作者", "高鹗")], [("周杰伦", "出生地", "台北")]]
    assert entities_in_sentence(sentences, predicted) == 4 / 6  # 红楼梦, 曹雪芹, 红楼, 周杰伦 (not 高鹗, 台北)
    assert entities_in_sentence(sentences, [[], []]) is None


def test_eval_ie_counts_every_answer(tmp_path, trained_model_dir):
    rows = [{"prompt": "浙江的省会是哪里？", "response": "[(浙江,省会,杭州)]"}, {"prompt": "大", "response": "[]"}]
    table = write_parquet(tmp_path / "ie.parquet", rows)
    recipe = tmp_path / "ie.yaml"
    recipe.write_text(f"stage: eval_ie\nmodel_name_or_path: {trained_model_dir}\neval_files: [{table}]\n")
    results = run_recipe(recipe, ["--output_dir", str(tmp_path / "out")])
    assert sum(results["answers"].values()) == 2
    assert results["answers"]["malformed"] == 2  # this model answers in words: no triples, counted
    assert (results["precision"], results["recall"], results["reference"]) == (0.0, 0.0, 1)
    predictions = [json.loads(line) for line in open(tmp_path / "out" / "predictions.jsonl")]
    assert predictions[0]["reference"] == [["浙江", "省会", "杭州"]] and predictions[0]["status"] == "malformed"
    assert "## Per predicate" in (tmp_path / "out" / "results.md").read_text(encoding="utf-8")


def test_paired_bootstrap_matches_scipys_and_a_hand_computed_difference():
    """The F1 difference is the hand computation on summed counts; the interval agrees with scipy's paired
    percentile bootstrap (an independent implementation) to Monte Carlo noise; equal systems give [0, 0]."""
    import numpy as np
    from scipy.stats import bootstrap

    from sccl_hf.triples import paired_bootstrap_f1

    rng = np.random.default_rng(3)
    reference = rng.integers(1, 4, size=300)
    a_predicted = rng.integers(0, 4, size=300)
    a_correct = np.minimum(a_predicted, rng.binomial(reference, 0.5))
    b_predicted = rng.integers(0, 4, size=300)
    b_correct = np.minimum(b_predicted, rng.binomial(reference, 0.3))
    a = np.stack([a_correct, a_predicted, reference], 1)
    b = np.stack([b_correct, b_predicted, reference], 1)
    ours = paired_bootstrap_f1(a.tolist(), b.tolist(), samples=4000)
    by_hand = 2 * a_correct.sum() / (a_predicted.sum() + reference.sum()) - 2 * b_correct.sum() / (
        b_predicted.sum() + reference.sum()
    )
    assert ours["f1_difference"] == pytest.approx(by_hand)

    def difference(ac, ap, ar, bc, bp, br, axis=-1):
        return 2 * ac.sum(axis) / (ap.sum(axis) + ar.sum(axis)) - 2 * bc.sum(axis) / (bp.sum(axis) + br.sum(axis))

    columns = (*a.T.astype(float), *b.T.astype(float))
    scipys = bootstrap(columns, difference, paired=True, vectorized=True, n_resamples=4000, method="percentile",
                       random_state=np.random.default_rng(0)).confidence_interval  # fmt: skip
    assert ours["interval_95"] == pytest.approx([scipys.low, scipys.high], abs=0.01)
    assert ours["interval_95"][0] > 0 and ours["excludes_zero"]  # A was planted better: 0.5 against 0.3 correct
    same = paired_bootstrap_f1(a.tolist(), a.tolist(), samples=200)
    assert same["interval_95"] == [0.0, 0.0] and not same["excludes_zero"]
    with pytest.raises(ValueError, match="same sentences"):
        paired_bootstrap_f1(a.tolist(), b[:10].tolist())


def test_eval_ie_compares_with_another_run_on_the_same_sentences(tmp_path, trained_model_dir):
    """`compare_with`: this model's F1 minus another run's, row by row on the same sentences. The other run here is
    planted (a predictions file that got every triple right), so the difference is -1 and the interval [-1, -1]."""
    rows = [{"prompt": f"句子{i}：甲{i}的作者是乙{i}。", "response": f"[(甲{i},作者,乙{i})]"} for i in range(6)]
    table = write_parquet(tmp_path / "ie.parquet", rows)
    other = tmp_path / "other"
    other.mkdir()
    with open(other / "predictions.jsonl", "w", encoding="utf-8") as f:
        for i, row in enumerate(rows):
            triple = [f"甲{i}", "作者", f"乙{i}"]
            f.write(json.dumps({"prompt": row["prompt"], "predicted": [triple], "reference": [triple]}) + "\n")
    (other / "results.json").write_text(json.dumps({"results": {"f1": 1.0, "model": "planted"}}))
    recipe = tmp_path / "ie.yaml"
    recipe.write_text(
        f"stage: eval_ie\nmodel_name_or_path: {trained_model_dir}\neval_files: [{table}]\ncompare_with: {other}\n"
    )
    results = run_recipe(recipe, ["--output_dir", str(tmp_path / "out"), "--bootstrap_samples", "300"])
    comparison = results["comparison"]
    assert results["f1"] == 0.0 and comparison["f1"] == 1.0 and comparison["model"] == "planted"
    assert comparison["f1_difference"] == -1.0 and comparison["interval_95"] == [-1.0, -1.0]
    assert comparison["sentences"] == 6 and comparison["excludes_zero"]
    assert "95% interval (paired bootstrap)" in (tmp_path / "out" / "results.md").read_text(encoding="utf-8")
    (other / "predictions.jsonl").write_text("".join(open(other / "predictions.jsonl").readlines()[:5]))
    with pytest.raises(ValueError, match="scored other sentences"):
        run_recipe(recipe, ["--output_dir", str(tmp_path / "out2")])


def test_report_gathers_stages_and_refuses_an_empty_folder(tmp_path, trained_model_dir, fixed_rows_file):
    from sccl_hf.cli import run_command as sccl

    run = tmp_path / "run"
    recipe = tmp_path / "gen.yaml"
    recipe.write_text(f"stage: eval_gen\nmodel_name_or_path: {trained_model_dir}\neval_files: [{fixed_rows_file}]\n")
    run_recipe(recipe, ["--output_dir", str(run / "eval" / "gen")])
    report_md, report_html = sccl(["report", str(run)])
    text = report_md.read_text(encoding="utf-8")
    assert "| eval_gen | eval/gen |" in text and "exact_match 1" in text and "### eval_gen:" in text
    seconds = json.loads((run / "eval" / "gen" / "results.json").read_text())["elapsed_seconds"]
    assert f"| **all stages** | | **{seconds:.0f}** (" in text
    # sample answers: the questions of the first eval_gen stage, each stage's answer beside the reference
    predictions = [json.loads(line) for line in open(run / "eval" / "gen" / "predictions.jsonl", encoding="utf-8")]
    other = run / "eval" / "gen_other"
    other.mkdir()
    (other / "results.json").write_text(json.dumps({"stage": "eval_gen", "results": {}, "finished_at": "9"}))
    with open(other / "predictions.jsonl", "w", encoding="utf-8") as f:
        f.write(json.dumps({"prompt": predictions[1]["prompt"], "answer": "别的|回答", "reference": "-"}) + "\n")
    text = sccl(["report", str(run)])[0].read_text(encoding="utf-8")
    assert "| question | reference | eval/gen | eval/gen_other |" in text
    first, second = (p for p in predictions[:2])
    assert f"| {first['prompt']} | {first['reference']} | {first['answer']} | (not asked) |" in text
    assert f"| {second['prompt']} | {second['reference']} | {second['answer']} | 别的\\|回答 |" in text
    assert "<table>" in report_html.read_text(encoding="utf-8")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as error:
        sccl(["report", str(tmp_path / "empty")])
    assert error.value.code == 2
