"""`objective: span_corruption | mixed`: T5's span corruption, the sentinels the tokenizer stage reserves for it, and
the promise that no text tokenizes into a sentinel and no saved model generates one."""

import csv
import random

import pytest
import torch

from conftest import ROOT, quick
from sccl_hf.span_corruption import corrupt, corrupted_lengths, noise_mask, piece_length, sentinel_ids

PROMPTS = ["浙江的省会是哪里？", "大的反义词是什么？", "3加5等于多少？", "把37写成汉字。", "你好", "写一首关于春天的诗"]
RESPONSES = ["杭州是浙江的省会，也是一座有名的城市。", "大的反义词是小。", "三加五等于八。", "三十七。", "你好，有什么可以帮你的吗？",
             "春风吹绿了江南的岸，桃花开满了山坡，燕子从南方飞回来了。"]  # fmt: skip
SENTINELS = list(range(1000, 1100))  # stand-in ids for the pure-function tests
EOS = 1


def merge_back(inputs: list[int], labels: list[int], sentinels=SENTINELS) -> list[int]:
    """The text again: each sentinel of the input replaced by what follows it in the labels (written here from
    the format's definition, not with the module's code)."""
    spans, current = {}, None
    for token in labels[:-1]:
        if token in sentinels:
            current = spans.setdefault(token, [])
        else:
            current.append(token)
    return [t for token in inputs[:-1] for t in (spans[token] if token in sentinels else [token])]


def test_inputs_and_targets_merge_back_into_the_original_tokens():
    rng = random.Random(0)
    for _ in range(500):
        length = rng.randint(2, 300)
        ids = [rng.randint(10, 900) for _ in range(length)]
        inputs, labels = corrupt(ids, SENTINELS, EOS, random.Random(rng.random()))
        assert merge_back(inputs, labels) == ids
        assert inputs[-1] == labels[-1] == EOS
        used = [t for t in inputs if t in SENTINELS]
        assert used == SENTINELS[: len(used)] == [t for t in labels if t in SENTINELS]  # in order, each once
        assert (len(inputs), len(labels)) == corrupted_lengths(length)


@pytest.mark.parametrize("max_seq_len", [16, 64, 128, 320, 512])
def test_a_piece_of_piece_length_fits_and_one_token_more_does_not(max_seq_len):
    length = piece_length(max_seq_len)
    assert max(corrupted_lengths(length)) <= max_seq_len < max(corrupted_lengths(length + 1))


@pytest.mark.parametrize(("density", "mean_span"), [(0.15, 3.0), (0.3, 5.0)])
def test_the_hidden_share_and_span_length_average_the_settings(density, mean_span):
    rng = random.Random(1)
    hidden = total = spans = 0
    for _ in range(2000):
        mask = noise_mask(rng.randint(20, 200), random.Random(rng.random()), density, mean_span)
        hidden, total = hidden + sum(mask), total + len(mask)
        spans += sum(1 for k, m in enumerate(mask) if m and (k == 0 or not mask[k - 1]))
    assert abs(hidden / total - density) < 0.01
    assert abs(hidden / spans - mean_span) < 0.15 * mean_span


def test_a_short_rows_span_falls_anywhere_not_only_at_its_end():
    """T5's algorithm puts a 10-token row's one span at its end, every time; here it starts anywhere."""
    starts = [noise_mask(10, random.Random(seed)).index(True) for seed in range(400)]
    assert set(starts) == set(range(9))  # 9: the span is 2 tokens (round(1.5)) ... or 1; never the whole row
    assert max(starts.count(s) for s in set(starts)) < 0.3 * len(starts)


def test_the_masks_depend_on_the_row_and_the_seed_not_on_its_batch(sentinel_tokenizer):
    """A stream's windows put a row into different batches on a resumed run's first window; its mask is the same."""
    from sccl_hf.tables import tokenize_pairs

    rows = {"prompt": PROMPTS, "response": RESPONSES}
    tokenize = tokenize_pairs(sentinel_tokenizer, 64, span_corruption_share=1.0, seed=7)
    whole = tokenize(rows)
    alone = [tokenize({"prompt": [p], "response": [r]}) for p, r in zip(rows["prompt"], rows["response"])]
    assert whole["input_ids"] == [row for one in alone for row in one["input_ids"]]
    assert whole["labels"] == [row for one in alone for row in one["labels"]]
    other_seed = tokenize_pairs(sentinel_tokenizer, 64, span_corruption_share=1.0, seed=8)(rows)
    assert other_seed["input_ids"] != whole["input_ids"]


def test_mixed_corrupts_about_its_share_of_the_rows(sentinel_tokenizer):
    from sccl_hf.tables import tokenize_pairs

    sentinels = set(sentinel_ids(sentinel_tokenizer))
    rows = {"prompt": [f"第{k}个问题" for k in range(400)], "response": ["回答" * 5] * 400}
    out = tokenize_pairs(sentinel_tokenizer, 64, span_corruption_share=0.3, seed=0)(rows)
    corrupted = sum(bool(sentinels & set(ids)) for ids in out["input_ids"])
    assert len(out["input_ids"]) == 400 and 0.22 < corrupted / 400 < 0.38


@pytest.fixture(scope="module")
def sentinel_tokenizer_dir(tmp_path_factory, demo_data):
    from sccl_hf.stages.tokenizer import TokenizerArguments, main

    out = tmp_path_factory.mktemp("sentinel_tokenizer")
    main(TokenizerArguments(files=[str(demo_data["pretrain"]), str(demo_data["sft"])], vocab_size=956,
                            sentinels=100, output_dir=str(out)))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def sentinel_tokenizer(sentinel_tokenizer_dir):
    from sccl_hf.model import load_tokenizer

    return load_tokenizer(sentinel_tokenizer_dir)


@pytest.mark.parametrize("kind", ["char_bpe", "byte_bpe", "word_frequency"])
def test_no_text_tokenizes_into_a_sentinel(kind, demo_data, tmp_path):
    import pyarrow.parquet as pq

    from sccl_hf.model import load_tokenizer
    from sccl_hf.stages.tokenizer import TokenizerArguments, main

    main(TokenizerArguments(files=[str(demo_data["sft"])], kind=kind, vocab_size=900, sentinels=100, min_count=3,
                            output_dir=str(tmp_path / "tok"), num_proc=1))  # fmt: skip
    tokenizer = load_tokenizer(tmp_path / "tok")
    sentinels = sentinel_ids(tokenizer)
    assert len(sentinels) == 100 and len(tokenizer) <= 900
    texts = [t for column in pq.read_table(demo_data["sft"]).to_pydict().values() for t in column]
    texts += ["<extra_id_0>", "请写<extra_id_5>和 <extra_id_99> ", "<extra_id_0><extra_id_1>"]
    for text in texts:
        assert not set(tokenizer(text)["input_ids"]) & set(sentinels), text


def test_span_corruption_needs_sentinels_and_says_so(tokenizer_dir, demo_data, tmp_path):
    from sccl_hf.stages import run_recipe

    with pytest.raises(ValueError, match=r"needs \d+ sentinel tokens .* has 0: train the tokenizer with `sentinels"):
        run_recipe(DEMO_PRETRAIN, ["--tokenizer_dir", str(tokenizer_dir), "--train_files", str(demo_data["pretrain"]),
                                   "--objective", "span_corruption", *quick(tmp_path, 2)])  # fmt: skip


DEMO_PRETRAIN = ROOT / "recipes" / "demo" / "pretrain.yaml"


def logged(output_dir) -> list[tuple[int, float]]:
    with open(output_dir / "training_log.csv") as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f) if r.get("loss")]


def test_a_resumed_span_corruption_stream_sees_the_same_masks(sentinel_tokenizer_dir, demo_data, tmp_path):
    """8 streamed steps against 4 + a resume from the checkpoint: the same losses to the bit, which the same rows
    with other masks would not give."""
    import shutil

    from sccl_hf.stages import run_recipe

    def run(output_dir, *extra):
        run_recipe(DEMO_PRETRAIN, ["--preset", "tiny", "--tokenizer_dir", str(sentinel_tokenizer_dir),
                                   "--train_files", str(demo_data["pretrain"]), "--objective", "span_corruption",
                                   "--streaming", "true", "--buffer_size", "40", "--dropout_rate", "0.0",
                                   "--save_strategy", "steps", "--save_steps", "4", *quick(output_dir, 8), *extra])  # fmt: skip

    run(tmp_path / "whole")
    shutil.copytree(tmp_path / "whole" / "checkpoint-4", tmp_path / "resumed" / "checkpoint-4")
    run(tmp_path / "resumed", "--resume_from_checkpoint", "true")
    assert logged(tmp_path / "resumed") == logged(tmp_path / "whole")[4:]


@pytest.fixture(scope="module")
def documents_file(tmp_path_factory):
    """A plain text file: two documents (title line, body lines), a one-line block, a line that is not UTF-8."""
    path = tmp_path_factory.mktemp("documents") / "documents.txt"
    body = "，".join(RESPONSES)  # long enough to be cut into several pieces at max_seq_len 16
    path.write_bytes(
        f"春天\n{body}\n{RESPONSES[0]}\n\n只有一行\n\n浙江\n".encode() + b"\xff\xfe\n" + f"{RESPONSES[2]}\n".encode()
    )
    return path


def test_a_text_file_gives_its_documents_cut_into_pieces_that_merge_back(sentinel_tokenizer, documents_file, caplog):
    from sccl_hf.tables import load_table, tokenize_pairs

    with caplog.at_level("WARNING"):
        rows = load_table([documents_file], ["prompt", "response"]).to_list()
    assert rows == [{"prompt": "春天", "response": "，".join(RESPONSES) + RESPONSES[0]},
                    {"prompt": "浙江", "response": RESPONSES[2]}]  # fmt: skip
    assert "a one-line document (its line is the title: no body) (line 5)" in caplog.text
    assert "undecodable bytes (utf-8) (line 8)" in caplog.text

    sentinels = sentinel_ids(sentinel_tokenizer)
    out = tokenize_pairs(sentinel_tokenizer, 16, span_corruption_share=1.0)({k: [rows[0][k]] for k in rows[0]})
    assert len(out["input_ids"]) > 2  # one document, several pieces
    assert all(len(ids) <= 16 for ids in out["input_ids"] + out["labels"])
    merged = [t for ids, labels in zip(out["input_ids"], out["labels"]) for t in merge_back(ids, labels, sentinels)]
    text = rows[0]["prompt"] + "\n" + rows[0]["response"]
    whole = sentinel_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert merged == whole[: len(merged)]  # in order, nothing lost but a last piece too short to hide a span in
    assert len(whole) - len(merged) < max(2, piece_length(16) // 4)


def test_pretrain_reads_text_files(sentinel_tokenizer_dir, documents_file, tmp_path):
    import json

    from sccl_hf.stages import run_recipe

    run_recipe(DEMO_PRETRAIN, ["--preset", "tiny", "--tokenizer_dir", str(sentinel_tokenizer_dir), "--train_files",
                               str(documents_file), "--objective", "span_corruption", "--max_seq_len", "16",
                               *quick(tmp_path, 2, "--save_strategy", "no")])  # fmt: skip
    assert json.loads((tmp_path / "results.json").read_text())["results"]["steps"] == 2


def fit_to_write_sentinels(model, tokenizer, prompts: list[str], max_steps: int = 300):
    """Train on span corruption rows until every prompt's first greedy token, before any suppression, is
    `<extra_id_0>` by at least one logit (every target starts with it): the behaviour suppression must stop."""
    from sccl_hf.tables import tokenize_pairs

    rows = tokenize_pairs(tokenizer, 64, span_corruption_share=1.0)({"prompt": prompts, "response": prompts})
    first = sentinel_ids(tokenizer)[0]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    encoded = tokenizer(prompts, return_tensors="pt", padding=True)
    start = torch.zeros(len(prompts), 1, dtype=torch.long)
    for step in range(max_steps):
        with torch.no_grad():
            model.eval()
            logits = model(**encoded, decoder_input_ids=start).logits[:, 0]
            others = logits.clone()
            others[:, first] = -float("inf")
            if bool((logits[:, first] - others.max(-1).values > 1.0).all()):
                return step
        model.train()
        k = step % len(rows["input_ids"])
        loss = model(input_ids=torch.tensor([rows["input_ids"][k]]), labels=torch.tensor([rows["labels"][k]])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    raise AssertionError(f"after {max_steps} steps the model still does not start its answers with <extra_id_0>")


@pytest.fixture(scope="module")
def sentinel_writing_model_dir(sentinel_tokenizer, tmp_path_factory):
    from transformers import set_seed

    from sccl_hf.model import build_config, new_model, save_model_dir

    set_seed(0)
    model = new_model(build_config("tiny", sentinel_tokenizer, max_seq_len=64))
    fit_to_write_sentinels(model, sentinel_tokenizer, PROMPTS)
    return save_model_dir(model, sentinel_tokenizer, tmp_path_factory.mktemp("sentinel_model"))


def test_no_engine_generates_a_sentinel(sentinel_writing_model_dir, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    from sccl_hf.batching import BatchedGenerator
    from sccl_hf.ct2 import convert_to_ct2
    from sccl_hf.engine import load_engine
    from sccl_hf.model import load_tokenizer

    prompts = PROMPTS
    tokenizer = load_tokenizer(sentinel_writing_model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(sentinel_writing_model_dir, trust_remote_code=True)
    encoded = tokenizer(prompts, return_tensors="pt", padding=True)
    suppressed = model.generate(**encoded, max_new_tokens=6, do_sample=False)
    saved, model.generation_config.suppress_tokens = model.generation_config.suppress_tokens, None
    assert (model.generate(**encoded, max_new_tokens=6, do_sample=False)[:, 1] == sentinel_ids(tokenizer)[0]).all()
    model.generation_config.suppress_tokens = saved  # the checks below can fail: unsuppressed, it writes sentinels
    assert not set(suppressed.flatten().tolist()) & set(sentinel_ids(tokenizer))

    sentinels = set(sentinel_ids(tokenizer))
    for search_type in ("greedy", "beam", "sampling", "contrastive"):
        written = model.my_generate(encoded["input_ids"], encoded["attention_mask"], 6, search_type=search_type)
        assert not set(written.flatten().tolist()) & sentinels, search_type
    answers = {}
    engine = load_engine(sentinel_writing_model_dir)
    answers["torch engine"] = engine.generate(prompts, max_new_tokens=6)
    batcher = BatchedGenerator(engine.model, engine.tokenizer, 64)
    try:
        answers["torch batcher"] = [batcher.submit(p, lambda _: None, 6).text for p in prompts]
    finally:
        batcher.close()
    convert_to_ct2(sentinel_writing_model_dir, tmp_path / "ct2", quantization="float32")
    answers["ctranslate2"] = load_engine(tmp_path / "ct2", engine="ct2").generate(prompts, max_new_tokens=6)
    for name, texts in answers.items():
        assert texts and not any("<extra_id" in text for text in texts), (name, texts)
