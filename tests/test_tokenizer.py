import unicodedata

import pytest
from transformers import AutoTokenizer

from sccl_hf.stages.tokenizer import TokenizerArguments, main
from sccl_hf.tokenization import SPECIAL_TOKENS, iter_pieces


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def test_special_token_ids(tokenizer):
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 1
    assert tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS) == list(range(len(SPECIAL_TOKENS)))


def test_tab_and_newline_are_in_the_vocabulary(tokenizer):
    vocab = tokenizer.get_vocab()
    assert "\t" in vocab and "\n" in vocab


def test_every_encoding_ends_in_eos(tokenizer):
    batch = tokenizer(["短句", "更长的一句话"], padding=True)
    for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
        assert ids[sum(mask) - 1] == tokenizer.eos_token_id


def test_char_bpe_round_trip_gives_the_nfkc_form(tokenizer):
    # Chinese characters of the demo corpus, full-width forms, ASCII, spaces, tab and newline.
    text = "浙江的省会是杭州！Hello world 123, ＡＢＣ１２\n大\t小 GPT-4"
    decoded = tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True)
    assert decoded == unicodedata.normalize("NFKC", text)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["char_bpe", "byte_bpe"])
def test_round_trip_on_real_mixed_text(kind, shared_data, tmp_path):
    args = TokenizerArguments(
        files=[str(shared_data / "pretrain" / "chatlm_train_3k.parquet")],
        vocab_size=3000,
        kind=kind,
        output_dir=str(tmp_path),
    )
    main(args)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    text = "今天天气很好，我们去公园散步吧。Python 3.11 和 PyTorch 2 都能用！"
    decoded = tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True)
    assert decoded == unicodedata.normalize("NFKC", text)
    assert tokenizer.pad_token_id == 0 and tokenizer.eos_token_id == 1


def test_jieba_pieces_are_bounded_and_max_chars_caps_the_corpus(demo_data):
    args = TokenizerArguments(files=[str(demo_data["sft"])], max_chars=500, max_piece_chars=3)
    pieces = [p for batch in iter_pieces(args) for p in batch]
    assert pieces and max(len(p) for p in pieces) <= 3
    assert sum(len(p) for p in pieces) <= 500


def test_txt_input_and_missing_column_errors(tmp_path, demo_data):
    (tmp_path / "corpus.txt").write_text("第一行文本\n第二行文本\n" * 50, encoding="utf-8")
    main(TokenizerArguments(files=[str(tmp_path / "corpus.txt")], vocab_size=400, output_dir=str(tmp_path / "tok")))
    assert AutoTokenizer.from_pretrained(tmp_path / "tok").eos_token_id == 1
    with pytest.raises(ValueError, match=r"sft\.parquet.*no column"):
        TokenizerArguments(files=[str(demo_data["sft"])], text_columns=["text"])


# -- byte fallback and the word-frequency kind (SCCLM) ----------------------------------------------------------

RARE_TEXT = "龘䶵𠀀 emoji 😀👍🏽 control \x07\x1b end、混合 Ω≈ç"  # rare CJK, an astral character, emoji, control bytes


def corpus_file(tmp_path):
    """A corpus with known frequencies: 40 lines of one sentence and 3 of another."""
    path = tmp_path / "corpus.txt"
    path.write_text("我们喜欢学习中文。\n" * 40 + "北京大学很有名。\n" * 3, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def word_frequency_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wordfreq")
    main(TokenizerArguments(files=[str(corpus_file(folder))], kind="word_frequency", min_count=10,
                            vocab_size=1000, output_dir=str(folder / "tok"), num_proc=1))  # fmt: skip
    return folder / "tok"


def test_kept_word_is_one_token_and_rare_words_are_not_kept(word_frequency_dir):
    tokenizer = AutoTokenizer.from_pretrained(word_frequency_dir)
    vocab = tokenizer.get_vocab()
    kept = [t for t in vocab if len(t) > 1 and not t.startswith(("<0x", "["))]
    assert {"我们", "喜欢", "学习", "中文"} <= set(kept)
    assert "北京" not in vocab and "大学" not in vocab  # seen 3 times, min_count 10
    for word in kept:
        ids = tokenizer(word)["input_ids"]
        assert ids == [vocab[word], tokenizer.eos_token_id], word
    assert tokenizer("我们喜欢学习中文")["input_ids"][:-1] == [vocab[w] for w in ("我们", "喜欢", "学习", "中文")]


def test_merges_are_the_splits_of_kept_words_and_round_trip(word_frequency_dir):
    import json

    state = json.loads((word_frequency_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = state["model"]["vocab"]
    for left, right in (m if isinstance(m, list) else m.split(" ") for m in state["model"]["merges"]):
        assert left in vocab and right in vocab and left + right in vocab
    tokenizer = AutoTokenizer.from_pretrained(word_frequency_dir)
    text = "我们喜欢学习中文，北京大学很有名！Hello 123"
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == unicodedata.normalize(
        "NFKC", text
    )


@pytest.mark.parametrize("kind", ["char_bpe", "byte_bpe", "word_frequency"])
def test_byte_fallback_round_trips_rare_characters_emoji_and_control_bytes(kind, tmp_path):
    main(TokenizerArguments(files=[str(corpus_file(tmp_path))], kind=kind, min_count=5, vocab_size=700,
                            output_dir=str(tmp_path / "tok"), num_proc=1))  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
    ids = tokenizer(RARE_TEXT)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == unicodedata.normalize("NFKC", RARE_TEXT)
    if kind != "byte_bpe":
        assert "<0xF0>" in tokenizer.convert_ids_to_tokens(ids)  # 😀 as its UTF-8 bytes


def test_word_counts_are_exact_on_known_frequencies(tmp_path):
    from sccl_hf.tokenization import count_words

    args = TokenizerArguments(files=[str(corpus_file(tmp_path))], kind="word_frequency", num_proc=1)
    counter = count_words(args)
    assert counter.characters["我"] == 40 and counter.characters["北"] == 3 and counter.characters["\n"] == 43
    assert counter.words["我们"] == 40 and counter.words["北京大学"] + counter.words["北京"] == 3
    assert counter.error_bound == 0


def test_counting_memory_is_bounded_and_the_error_stays_within_its_bound():
    import random
    from collections import Counter

    from sccl_hf.tokenization import WordCounter

    rng = random.Random(0)
    vocabulary = [f"词{i}" for i in range(5000)]
    stream = [vocabulary[min(int(rng.paretovariate(1.1)) - 1, 4999)] for _ in range(60000)]  # Zipf-like
    counter = WordCounter(max_words=200)
    for start in range(0, len(stream), 500):
        chunk = stream[start : start + 500]
        counter.add("".join(chunk), chunk)
        assert len(counter.words) <= 200 + 500  # pruned back whenever it passes the limit
    truth = Counter(stream)
    assert counter.prunings > 0 and counter.error_bound > 0
    for word, count in truth.items():
        assert 0 <= count - counter.words.get(word, 0) <= counter.error_bound  # low by at most the bound, never high
    for word, count in truth.items():
        if count >= 100 + counter.error_bound:
            assert counter.words[word] >= 100  # kept at min_count 100, as promised


@pytest.mark.slow
def test_word_frequency_tokenizer_loads_in_a_fresh_process(word_frequency_dir, tmp_path):
    from conftest import run_python

    code = (
        "from transformers import AutoTokenizer\n"
        f"t = AutoTokenizer.from_pretrained({str(word_frequency_dir)!r})\n"
        "ids = t('我们喜欢学习中文。😀')['input_ids']\n"
        "assert ids[-1] == t.eos_token_id == 1 and t.pad_token_id == 0, ids\n"
        "print(t.decode(ids, skip_special_tokens=True))\n"
    )
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "我们喜欢学习中文。😀"


def test_data_stage_output_folders_are_read_as_they_are(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "train").mkdir()
    rows = [{"prompt": "我们喜欢什么？", "response": "我们喜欢学习中文。", "source": "x"}] * 30
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train" / "part-00000.parquet")
    main(TokenizerArguments(files=[str(tmp_path / "train")], kind="word_frequency", min_count=20,
                            vocab_size=600, output_dir=str(tmp_path / "tok"), num_proc=1))  # fmt: skip
    assert "我们" in AutoTokenizer.from_pretrained(tmp_path / "tok").get_vocab()
