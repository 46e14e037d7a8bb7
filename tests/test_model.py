import json

import pytest
import torch
from transformers import T5ForConditionalGeneration

from conftest import run_python
from modeling_chat_model import TextToTextModel
from sccl_hf.model import PRESETS, build_config, count_parameters, load_model, load_tokenizer


@pytest.fixture(scope="module")
def model_and_tokenizer(answering_model_dir):
    return load_model(answering_model_dir), load_tokenizer(answering_model_dir)  # long, varied greedy answers


def encode(tokenizer, prompts):
    return tokenizer(prompts, padding=True, return_tensors="pt")


def test_saved_directory_is_self_contained(tiny_model_dir):
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= names
    assert {"configuration_chat_model.py", "modeling_chat_model.py"} <= names
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "t5"
    assert config["auto_map"]["AutoModelForSeq2SeqLM"] == "modeling_chat_model.TextToTextModel"
    generation = json.loads((tiny_model_dir / "generation_config.json").read_text())
    assert (generation["eos_token_id"], generation["pad_token_id"], generation["decoder_start_token_id"]) == (1, 0, 0)


def test_saved_model_loads_with_remote_code_in_a_process_without_sccl_hf(tiny_model_dir, tmp_path):
    result = run_python(
        f"""
import sys
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
model = AutoModelForSeq2SeqLM.from_pretrained({str(tiny_model_dir)!r}, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained({str(tiny_model_dir)!r})
batch = tokenizer(["浙江的省会是哪里？"], return_tensors="pt")
out = model.my_generate(batch["input_ids"], batch["attention_mask"], max_seq_len=5, search_type="greedy")
assert "sccl_hf" not in sys.modules, "the model folder must not need sccl_hf"
print(type(model).__module__, tuple(out.shape))
""",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    module, shape = result.stdout.split(maxsplit=1)
    assert module.startswith("transformers_modules") and module.endswith("modeling_chat_model")
    assert shape.strip().startswith("(1,")


def test_t5_state_dict_loads_with_no_missing_or_unexpected_keys(tokenizer_dir, tmp_path):
    tokenizer = load_tokenizer(tokenizer_dir)
    config = build_config("tiny", tokenizer)
    t5 = T5ForConditionalGeneration(config)
    result = TextToTextModel(config).load_state_dict(t5.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # A plain T5 checkpoint folder (ChatLM-mini-Chinese's layout) loads too, with identical weights.
    t5.save_pretrained(tmp_path)
    model, info = TextToTextModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert torch.equal(model.lm_head.weight, t5.lm_head.weight)


def test_chatlm_preset_has_about_188m_unique_parameters():
    class Vocab:  # build_config only reads the vocabulary size and special-token ids
        pad_token_id, eos_token_id, bos_token_id = 0, 1, 3

        def __len__(self):
            return 29_298

    with torch.device("meta"):
        model = TextToTextModel(build_config("chatlm-0.2b", Vocab()))
    assert 187e6 < count_parameters(model) < 189e6
    assert set(PRESETS) >= {"tiny", "small", "chatlm-0.2b"}


@pytest.mark.parametrize("search_type", ["greedy", "beam", "sampling", "contrastive"])
def test_my_generate_returns_decoder_ids_starting_with_decoder_start(model_and_tokenizer, search_type):
    model, tokenizer = model_and_tokenizer
    batch = encode(tokenizer, ["浙江的省会是哪里？", "大的反义词是什么？"])
    torch.manual_seed(0)
    out = model.my_generate(batch["input_ids"], batch["attention_mask"], max_seq_len=6, search_type=search_type)
    assert out.shape[0] == 2 and 2 <= out.shape[1] <= 7
    assert (out[:, 0] == model.config.decoder_start_token_id).all()


def test_greedy_matches_plain_generate(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    batch = encode(tokenizer, ["3加5等于多少？"])
    ours = model.my_generate(batch["input_ids"], batch["attention_mask"], max_seq_len=8, search_type="greedy")
    reference = model.generate(**batch, max_new_tokens=8, do_sample=False, num_beams=1)
    assert torch.equal(ours, reference)


def test_contrastive_with_no_degeneration_penalty_is_greedy(model_and_tokenizer):
    # With penalty_alpha = 0 the score is the token probability, so the best of the top k is the greedy token.
    model, tokenizer = model_and_tokenizer
    batch = encode(tokenizer, ["3加5等于多少？", "把37写成汉字。"])
    greedy = model.my_generate(batch["input_ids"], batch["attention_mask"], max_seq_len=8, search_type="greedy")
    contrastive = model.my_generate(
        batch["input_ids"], batch["attention_mask"], max_seq_len=8, search_type="contrastive", penalty_alpha=0.0
    )
    width = min(greedy.shape[1], contrastive.shape[1])
    assert torch.equal(greedy[:, :width], contrastive[:, :width])


def test_unknown_search_type_is_an_error(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    batch = encode(tokenizer, ["你好"])
    with pytest.raises(ValueError, match="search_type"):
        model.my_generate(batch["input_ids"], batch["attention_mask"], search_type="nucleus")


class CollectingStreamer:
    def __init__(self):
        self.chunks, self.ended = [], False

    def put(self, value):
        self.chunks.append(value.reshape(-1).tolist())

    def end(self):
        self.ended = True


@pytest.mark.parametrize("search_type", ["greedy", "sampling", "contrastive", "beam"])
def test_streamer_receives_every_generated_token(model_and_tokenizer, search_type):
    model, tokenizer = model_and_tokenizer
    batch = encode(tokenizer, ["浙江的省会是哪里？"])
    streamer = CollectingStreamer()
    torch.manual_seed(0)
    out = model.my_generate(
        batch["input_ids"], batch["attention_mask"], max_seq_len=6, search_type=search_type, streamer=streamer
    )
    assert streamer.ended
    assert [t for chunk in streamer.chunks for t in chunk] == out[0].tolist()


def contrastive_by_brute_force(model, input_ids, attention_mask, steps: int, alpha: float, k: int) -> list[int]:
    """Contrastive search computed the plain way, as an oracle for the model's cached one: at each step the whole
    decoder input is run again for every one of the top-k candidates (no cache), and each is scored as
    (1 - alpha) * p(candidate) - alpha * max cosine(h(candidate), h(every earlier position))."""
    import torch.nn.functional as F

    history = [model.config.decoder_start_token_id]
    with torch.no_grad():
        for _ in range(steps):
            out = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=torch.tensor([history]))
            probs, candidates = out.logits[0, -1].softmax(-1).topk(k)
            scores = []
            for p, candidate in zip(probs.tolist(), candidates.tolist()):
                hidden = model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    decoder_input_ids=torch.tensor([history + [candidate]]),
                    output_hidden_states=True,
                ).decoder_hidden_states[-1][0]
                similarity = F.cosine_similarity(hidden[-1:], hidden[:-1], dim=-1).max().item()
                scores.append((1 - alpha) * p - alpha * similarity)
            history.append(candidates[max(range(k), key=scores.__getitem__)].item())
            if history[-1] == model.config.eos_token_id:
                break
    return history


def test_contrastive_search_with_a_penalty_equals_a_brute_force_computation(answering_model_dir):
    model, tokenizer = load_model(answering_model_dir).eval(), load_tokenizer(answering_model_dir)
    for prompt in ("你好", "3加5等于多少？"):
        batch = encode(tokenizer, [prompt])
        greedy = model.my_generate(batch["input_ids"], batch["attention_mask"], max_seq_len=12, search_type="greedy")
        ours = model.my_generate(
            batch["input_ids"], batch["attention_mask"], max_seq_len=12, search_type="contrastive", penalty_alpha=0.8,
            top_k=4,
        )  # fmt: skip
        expected = contrastive_by_brute_force(model, batch["input_ids"], batch["attention_mask"], 12, 0.8, 4)
        assert ours[0, : len(expected)].tolist() == expected
        assert ours[0].tolist() != greedy[0].tolist()  # the penalty changed the answer: the oracle has work to do


def test_an_answer_stops_at_the_first_stop_string(answering_model_dir):
    """`stop`: generation ends at the first stop string, which the answer keeps; answers without one are as
    before. Rows of one batch stop at different steps."""
    from conftest import ANSWERING_PROMPTS
    from sccl_hf.engine import Engine

    engine = Engine.load(answering_model_dir, "cpu")
    plain = engine.answer(ANSWERING_PROMPTS, max_new_tokens=40)
    stopped = engine.answer(ANSWERING_PROMPTS, max_new_tokens=40, stop=[","])
    with_comma = [i for i, a in enumerate(plain) if "," in a.text]
    assert len(with_comma) >= 5  # most answers hold a comma (NFKC: the targets' "，" decodes as ",")
    for i, (before, after) in enumerate(zip(plain, stopped)):
        if i in with_comma:
            assert after.text == before.text[: before.text.index(",") + 1] and after.ended
            assert after.tokens < before.tokens  # generation stopped there: not cut afterwards
        else:
            assert after == before
