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
    stream = load_table([path], ["prompt", "response"], streaming=True, shuffle_seed=1, buffer_size=10)
    assert stream.n_shards == 8
    seen = [r["prompt"] for r in stream]
    assert sorted(seen) == sorted(r["prompt"] for r in rows) and seen != [r["prompt"] for r in rows]
