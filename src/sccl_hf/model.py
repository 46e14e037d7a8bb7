"""Building, loading and saving the chat model: size presets and the self-contained model directory."""

import logging
import shutil
from pathlib import Path

import torch
from transformers import AutoTokenizer, GenerationConfig, PreTrainedTokenizerBase

import configuration_chat_model
import modeling_chat_model
from configuration_chat_model import TextToTextModelConfig
from modeling_chat_model import TextToTextModel
from sccl_hf.errors import ModelFolderError
from sccl_hf.model_folder import finished_model, local_model_dir
from sccl_hf.prompt import install_chat_template
from sccl_hf.span_corruption import sentinel_ids
from sccl_hf.tokenization import ensure_eos_template, save_tokenizer

logger = logging.getLogger(__name__)

# Saving a model (final or checkpoint) copies the two remote-code files and writes `auto_map`, so every saved
# folder loads with AutoModelForSeq2SeqLM.from_pretrained(dir, trust_remote_code=True) on any machine.
TextToTextModelConfig.register_for_auto_class()
TextToTextModel.register_for_auto_class("AutoModelForSeq2SeqLM")

DEFAULT_MAX_SEQ_LEN = 256  # for configs without max_seq_len (plain T5 folders)

# T5 v1.0 shapes (ReLU feed-forward, tied embeddings). chatlm-0.2b is ChatLM-mini-Chinese's model.
PRESETS = {
    "tiny": dict(d_model=128, d_ff=512, num_heads=4, d_kv=32, num_layers=2, num_decoder_layers=2),
    "small": dict(d_model=256, d_ff=1024, num_heads=4, d_kv=64, num_layers=4, num_decoder_layers=4),
    "chatlm-0.2b": dict(d_model=768, d_ff=3072, num_heads=12, d_kv=64, num_layers=10, num_decoder_layers=10),
}


def build_config(preset: str, tokenizer: PreTrainedTokenizerBase, max_seq_len: int = DEFAULT_MAX_SEQ_LEN, **overrides):
    if preset not in PRESETS:
        raise ValueError(f"preset: unknown size preset '{preset}'; choose one of {', '.join(PRESETS)}")
    check_special_tokens(tokenizer)
    return TextToTextModelConfig(
        vocab_size=len(tokenizer),
        max_seq_len=max_seq_len,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        # the tokenizer's [BOS] too: configs and tokenizers agree from the start, so the Trainer has nothing to
        # "align" (and no warning to print at every training start)
        bos_token_id=tokenizer.bos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        **{**PRESETS[preset], **overrides},
    )


def check_special_tokens(tokenizer: PreTrainedTokenizerBase) -> None:
    if tokenizer.pad_token_id != 0 or tokenizer.eos_token_id != 1:
        raise ValueError(
            f"tokenizer must have [PAD]=0 and [EOS]=1, got pad={tokenizer.pad_token_id} eos={tokenizer.eos_token_id}"
        )


def generation_config_for(config: TextToTextModelConfig, suppress_tokens: list[int] | None = None) -> GenerationConfig:
    """eos, pad, decoder start, the length limit; `suppress_tokens`: ids never generated (span corruption's
    sentinels: a pretrained model has learnt to write them in its targets)."""
    return GenerationConfig(
        suppress_tokens=list(suppress_tokens) if suppress_tokens else None,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        bos_token_id=getattr(config, "bos_token_id", None),
        decoder_start_token_id=config.decoder_start_token_id,
        max_new_tokens=model_max_len(config),
    )


def new_model(config: TextToTextModelConfig) -> TextToTextModel:
    model = TextToTextModel(config)
    model.generation_config = generation_config_for(config)
    return model


def load_model(model_dir: str | Path, dtype: torch.dtype | None = None, config=None) -> TextToTextModel:
    """Load a saved model directory (ours or ChatLM-mini-Chinese's layout), or a hub id, with our local model
    class."""
    model = TextToTextModel.from_pretrained(local_model_dir(model_dir), dtype=dtype, config=config)
    saved = model.generation_config.suppress_tokens  # from the folder's generation_config.json
    model.generation_config = generation_config_for(model.config, saved)
    return model


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def load_tokenizer(tokenizer_dir: str | Path) -> PreTrainedTokenizerBase:
    """A saved tokenizer, made to follow the project's conventions: [PAD]=0 and [EOS]=1 (checked), every
    encoding closed by [EOS] (the template is installed, with a warning, when the tokenizer lacks it), and the
    project's chat template when it has none. A hub id is downloaded first."""
    tokenizer_dir = local_model_dir(tokenizer_dir)
    folder = Path(tokenizer_dir)
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelFolderError(
            f"{folder}: no tokenizer files ({' or '.join(TOKENIZER_FILES)}); a model folder must carry its "
            "tokenizer (or give tokenizer_dir)"
        )
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    check_special_tokens(tokenizer)
    ensure_eos_template(tokenizer, source=str(tokenizer_dir))
    if not tokenizer.chat_template:
        install_chat_template(tokenizer)
    return tokenizer


def model_max_len(config) -> int:
    """The longest prompt or response, in tokens, the model was trained for: the one place it is read."""
    return getattr(config, "max_seq_len", None) or DEFAULT_MAX_SEQ_LEN


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def save_model_dir(model, tokenizer: PreTrainedTokenizerBase, output_dir: str | Path) -> Path:
    """Write a self-contained model directory: safetensors weights, config with auto_map, the two
    remote-code files, the tokenizer and a generation config with eos, pad and decoder start."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    prepare_for_save(model, tokenizer)
    model.save_pretrained(output_dir)
    save_tokenizer(tokenizer, output_dir)
    copy_remote_code(output_dir)
    return output_dir


def prepare_for_save(model, tokenizer: PreTrainedTokenizerBase | None = None) -> None:
    """Set what loading needs: the architecture name and a generation config with eos, pad, decoder start, and
    the tokenizer's sentinel tokens suppressed (without a tokenizer: those the model suppresses already)."""
    suppress = sentinel_ids(tokenizer) if tokenizer is not None else model.generation_config.suppress_tokens
    model.generation_config = generation_config_for(model.config, suppress)
    model.config.architectures = ["TextToTextModel"]
    model.config.use_cache = True  # trainers turn the cache off while training; generation wants it back


def copy_remote_code(output_dir: str | Path) -> None:
    for module in (configuration_chat_model, modeling_chat_model):
        shutil.copy2(module.__file__, Path(output_dir) / Path(module.__file__).name)


def load_config(model_dir: str | Path) -> TextToTextModelConfig:
    return TextToTextModelConfig.from_pretrained(local_model_dir(model_dir))


def training_max_len(config, requested: int | None) -> int:
    """The sequence limit a training stage uses: the recipe's `max_seq_len` when it gives one (the config then
    records it, since the model is now trained for it), else the model's own."""
    if requested:
        config.max_seq_len = requested
    return model_max_len(config)


def convert_chatlm_folder(source: str | Path, target: str | Path, max_seq_len: int | None = None) -> Path:
    """A model folder in ChatLM-mini-Chinese's published layout (config.json with `architectures:
    [TextToTextModel]` and no `auto_map`, T5 state-dict names, its own tokenizer.json without the [EOS]
    template) rewritten as a self-contained folder of ours: the same weights, our remote code, the [EOS] and
    chat templates, a generation config with eos and pad. Its `max_seq_len` is kept (or set)."""
    from transformers import PreTrainedTokenizerFast

    source, target = Path(source), Path(target)
    if not (source / "config.json").is_file():
        raise ModelFolderError(f"{source}: no config.json, not a model folder")
    if not (source / "tokenizer.json").is_file():
        raise ModelFolderError(f"{source}: no tokenizer.json (ChatLM-mini-Chinese's folders carry one)")
    if target.resolve() == source.resolve():
        raise ModelFolderError(f"{target}: the converted model must go to another folder")
    if finished_model(target):
        raise ModelFolderError(f"{target}: already holds a model; choose another folder")
    config = TextToTextModelConfig.from_pretrained(source)
    if max_seq_len:
        config.max_seq_len = max_seq_len
    model, info = TextToTextModel.from_pretrained(source, config=config, output_loading_info=True)
    if info["missing_keys"] or info["unexpected_keys"]:
        raise ModelFolderError(
            f"{source}: weights do not match a T5 model: missing {info['missing_keys'][:5]}, "
            f"unexpected {info['unexpected_keys'][:5]}"
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(source / "tokenizer.json"),
        **{f"{name}_token": f"[{name.upper()}]" for name in ("pad", "eos", "unk", "sep", "bos", "cls", "mask")},
    )
    check_special_tokens(tokenizer)
    model.config.bos_token_id = tokenizer.bos_token_id
    ensure_eos_template(tokenizer, source=str(source))
    install_chat_template(tokenizer)
    return save_model_dir(model, tokenizer, target)
