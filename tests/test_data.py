import logging

import pytest

from conftest import write_parquet
from sccl_hf.tables import DataError, load_table


def test_invalid_rows_are_skipped_and_counted_per_file(tmp_path, caplog):
    path = write_parquet(
        tmp_path / "mixed.parquet",
        [
            {"prompt": "好问题", "response": "好回答"},
            {"prompt": None, "response": "没有问题"},
            {"prompt": "没有回答", "response": ""},
            {"prompt": "   ", "response": "空白问题"},
            {"prompt": "第二个好问题", "response": "第二个好回答"},
        ],
    )
    for streaming in (False, True):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="sccl_hf.tables"):
            rows = list(load_table([path], ["prompt", "response"], streaming=streaming))
        assert [r["prompt"] for r in rows] == ["好问题", "第二个好问题"]
        assert (
            "mixed.parquet: skipped 1 null prompt (row 1); 1 empty response (row 2); 1 empty prompt (row 3)"
            in caplog.text
        )


def test_non_string_column_rows_are_skipped(tmp_path):
    path = write_parquet(
        tmp_path / "numbers.parquet", [{"prompt": "问", "response": 1}, {"prompt": "问", "response": 2}]
    )
    with pytest.raises(DataError, match="no usable rows"):
        load_table([path], ["prompt", "response"])


def test_missing_column_is_an_error_naming_the_file(tmp_path):
    good = write_parquet(tmp_path / "good.parquet", [{"prompt": "问", "response": "答"}])
    bad = write_parquet(tmp_path / "bad.parquet", [{"question": "问", "answer": "答"}])
    with pytest.raises(DataError, match=r"bad\.parquet: missing column\(s\) \['prompt', 'response'\]"):
        load_table([good, bad], ["prompt", "response"])


def test_json_lines_are_read_and_a_broken_line_is_skipped_and_named(tmp_path, caplog):
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        '{"prompt": "问一", "response": "答一"}\n\n{"prompt": "问二", "response": "答二"}\n', encoding="utf-8"
    )
    assert [r["response"] for r in load_table([path], ["prompt", "response"])] == ["答一", "答二"]
    path.write_text('{"prompt": "问一", "response": "答一"}\n{"prompt": "问二", \n', encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="sccl_hf.tables"):
        assert [r["response"] for r in load_table([path], ["prompt", "response"])] == ["答一"]
    assert "pairs.jsonl: skipped 1 not valid JSON (line 2)" in caplog.text


def test_streaming_reads_every_row_group_once(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": f"问{i}", "response": f"答{i}"} for i in range(50)]
    path = tmp_path / "groups.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=7)
    stream = load_table([path], ["prompt", "response"], streaming=True, shuffle_seed=1)
    assert stream.n_shards == 8
    seen = [r["prompt"] for r in stream]
    assert sorted(seen) == sorted(r["prompt"] for r in rows) and seen != [r["prompt"] for r in rows]


def test_a_stream_grouped_by_length_keeps_every_row_and_pads_less(tmp_path, tokenizer_dir):
    import random
    from types import SimpleNamespace

    from sccl_hf.model import load_tokenizer
    from sccl_hf.recipes import resolve_files
    from sccl_hf.tables import load_seq2seq_splits

    rng = random.Random(0)

    def length():  # mostly short, some long, as in chat data
        return rng.randint(1, 8) if rng.random() < 0.8 else rng.randint(40, 60)

    rows = [{"prompt": "问" * length(), "response": "答" * length()} for _ in range(400)]
    path = write_parquet(tmp_path / "rows.parquet", rows)
    tokenizer = load_tokenizer(tokenizer_dir)
    args = SimpleNamespace(train_paths=resolve_files([str(path)], "train_files"), eval_paths=[], streaming=True,
                           buffer_size=200, prompt_column="prompt", response_column="response", max_tokens_per_batch=None)  # fmt: skip

    def batches(group):
        strategy = "group_by_length" if group else "random"
        training = SimpleNamespace(seed=3, per_device_train_batch_size=8, train_sampling_strategy=strategy)
        train, _ = load_seq2seq_splits(args, tokenizer, 64, training)
        items = list(train)
        return [items[i : i + 8] for i in range(0, len(items), 8)]

    def padded_share(batch_list):
        real = sum(len(r["input_ids"]) + len(r["labels"]) for b in batch_list for r in b)
        computed = sum(len(b) * (max(len(r["input_ids"]) for r in b) + max(len(r["labels"]) for r in b))
                       for b in batch_list)  # fmt: skip
        return real / computed

    plain, grouped = batches(False), batches(True)
    key = lambda r: (tuple(r["input_ids"]), tuple(r["labels"]))  # noqa: E731
    # every row of both windows (of 200 rows), once: the tokenizer's own encodings of the source rows
    encode = lambda text: tuple(tokenizer(text, truncation=True, max_length=64)["input_ids"])  # noqa: E731
    source = sorted((encode(r["prompt"]), encode(r["response"])) for r in rows)
    assert sorted(map(key, (r for b in grouped for r in b))) == source
    assert sorted(map(key, (r for b in plain for r in b))) == source
    assert padded_share(grouped) > 0.8 > 0.5 > padded_share(plain)  # real tokens / computed positions
    assert batches(True) == grouped  # the same seed, the same order


def test_each_window_of_a_stream_is_shuffled_in_its_own_order(tmp_path, tokenizer_dir):
    """The window shuffle is seeded by the recipe's seed and the window's position: every window keeps its own rows
    and puts them in an order of its own. Seeded without the position, every window of `buffer_size` rows would be
    put in the same order, a pattern the model could learn."""
    from types import SimpleNamespace

    from sccl_hf.model import load_tokenizer
    from sccl_hf.recipes import resolve_files
    from sccl_hf.tables import load_seq2seq_splits

    window, windows = 40, 4
    rows = [{"prompt": f"第{i}个问题", "response": f"答案{i}"} for i in range(window * windows)]
    path = write_parquet(tmp_path / "rows.parquet", rows)
    tokenizer = load_tokenizer(tokenizer_dir)
    position = {
        tuple(tokenizer(r["prompt"], truncation=True, max_length=64)["input_ids"]): i for i, r in enumerate(rows)
    }
    assert len(position) == len(rows)  # every row tells itself apart
    args = SimpleNamespace(train_paths=resolve_files([str(path)], "train_files"), eval_paths=[], streaming=True,
                           buffer_size=window, prompt_column="prompt", response_column="response", max_tokens_per_batch=None)  # fmt: skip
    training = SimpleNamespace(seed=3, per_device_train_batch_size=4, train_sampling_strategy="random")
    train, _ = load_seq2seq_splits(args, tokenizer, 64, training)
    order = [position[tuple(r["input_ids"])] for r in train]
    assert sorted(order) == list(range(len(rows)))
    orders = [tuple(i - w * window for i in order[w * window : (w + 1) * window]) for w in range(windows)]
    assert all(sorted(o) == list(range(window)) for o in orders)  # each window holds its own rows
    assert all(o != tuple(range(window)) for o in orders)  # shuffled
    assert len(set(orders)) == windows, orders  # each in an order of its own


def test_a_token_budget_cuts_batches_of_varying_rows_under_it(tmp_path, tokenizer_dir):
    """`max_tokens_per_batch`: whole batches come out of the stream, each under the budget in computed positions
    and under per_device_train_batch_size rows; long rows make smaller batches; no row is lost; the collator
    unpacks them into the usual padded tensors."""
    import random
    from types import SimpleNamespace

    from transformers import DataCollatorForSeq2Seq

    from sccl_hf.model import load_tokenizer
    from sccl_hf.recipes import DataArguments
    from sccl_hf.tables import PackedBatchCollator, load_seq2seq_splits

    rng = random.Random(1)
    rows = [{"prompt": "问" * rng.choice([2, 3, 50]), "response": "答" * rng.randint(1, 6)} for _ in range(300)]
    path = write_parquet(tmp_path / "rows.parquet", rows)
    tokenizer = load_tokenizer(tokenizer_dir)
    args = DataArguments(train_files=[str(path)], streaming=True, buffer_size=100, max_tokens_per_batch=200)
    training = SimpleNamespace(seed=0, per_device_train_batch_size=16, train_sampling_strategy="group_by_length")
    train, _ = load_seq2seq_splits(args, tokenizer, 64, training)
    batches = list(train)
    sizes = [len(b["input_ids"]) for b in batches]
    cost = [len(b["input_ids"]) * (max(map(len, b["input_ids"])) + max(map(len, b["labels"]))) for b in batches]
    assert sum(sizes) == len(rows) and max(sizes) == 16 and min(sizes) < 8
    assert max(cost) <= 200
    long_rows = [n for n, b in zip(sizes, batches) if max(map(len, b["input_ids"])) > 40]
    assert long_rows and max(long_rows) < 4  # 50-character prompts: few per batch

    collated = PackedBatchCollator(DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100))([batches[0]])
    assert collated["input_ids"].shape[0] == sizes[0]
    assert collated["labels"].shape[0] == sizes[0]

    with pytest.raises(ValueError, match="max_tokens_per_batch needs streaming: true"):
        DataArguments(train_files=[str(path)], max_tokens_per_batch=200)
    small = DataArguments(train_files=[str(path)], streaming=True, max_tokens_per_batch=100)
    with pytest.raises(ValueError, match="less than one row can take"):
        load_seq2seq_splits(small, tokenizer, 64, training)


def test_masked_spans_hide_about_fifteen_percent_and_keep_the_rest_in_order():
    """`mask_spans` against a hand check: the kept tokens are the input's, in order, each hidden run is one [MASK],
    [EOS] stays last, and about 15% of the tokens are hidden (over many draws)."""
    import random

    from sccl_hf.tables import mask_spans

    rng, mask, hidden, total = random.Random(0), 5, 0, 0
    for _ in range(300):
        ids = [rng.randint(10, 99) for _ in range(rng.randint(2, 80))] + [1]
        out = mask_spans(ids, mask, rng)
        assert out[-1] == 1 and out.count(1) == 1 and mask in out or len(ids) == 2
        kept, position = [t for t in out[:-1] if t != mask], 0
        for token in kept:  # a subsequence of the input, in order
            position = ids.index(token, position) + 1
        assert all(not (a == b == mask) for a, b in zip(out, out[1:]))  # one [MASK] per hidden run
        hidden, total = hidden + len(ids) - 1 - len(kept), total + len(ids) - 1
    assert 0.10 < hidden / total < 0.25


def test_a_share_of_training_rows_become_reconstruction_rows(tmp_path, tokenizer_dir):
    """`reconstruction_share`: that share of the training rows (the same rows every time) has the masked
    response as its prompt; every other row, and the evaluation set, is the tokenizer's own encoding."""
    from types import SimpleNamespace

    from sccl_hf.model import load_tokenizer
    from sccl_hf.recipes import resolve_files
    from sccl_hf.tables import load_seq2seq_splits

    rows = [{"prompt": f"问题{i}", "response": f"第{i}个回答是北京上海广州深圳{i * 7}"} for i in range(400)]
    path = write_parquet(tmp_path / "rows.parquet", rows)
    tokenizer = load_tokenizer(tokenizer_dir)
    paths = resolve_files([str(path)], "train_files")
    args = SimpleNamespace(train_paths=paths, eval_paths=paths, streaming=False, prompt_column="prompt",
                           response_column="response", max_tokens_per_batch=None, reconstruction_share=0.25)  # fmt: skip
    training = SimpleNamespace(seed=3, per_device_train_batch_size=8, train_sampling_strategy="random")
    train, evaluation = load_seq2seq_splits(args, tokenizer, 64, training)
    encode = lambda text: tokenizer(text, truncation=True, max_length=64)["input_ids"]  # noqa: E731
    by_label = {tuple(encode(r["response"])): encode(r["prompt"]) for r in rows}
    rebuilt = [r for r in train if r["input_ids"] != by_label[tuple(r["labels"])]]
    assert 0.18 < len(rebuilt) / len(rows) < 0.32
    for row in rebuilt:
        assert tokenizer.mask_token_id in row["input_ids"] and row["input_ids"][-1] == tokenizer.eos_token_id
        assert len(row["attention_mask"]) == len(row["input_ids"])
    assert all(r["input_ids"] == by_label[tuple(r["labels"])] for r in evaluation)
    again, _ = load_seq2seq_splits(args, tokenizer, 64, training)
    assert sorted(map(str, again["input_ids"])) == sorted(map(str, train["input_ids"]))
