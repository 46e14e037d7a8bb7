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
    main(TokenizerArguments(files=[str(tmp_path / "corpus.txt")], vocab_size=50, output_dir=str(tmp_path / "tok")))
    assert AutoTokenizer.from_pretrained(tmp_path / "tok").eos_token_id == 1
    with pytest.raises(ValueError, match=r"sft\.parquet.*no column"):
        TokenizerArguments(files=[str(demo_data["sft"])], text_columns=["text"])
