"""What a model folder holds, checked without loading anything heavy; and model references that name a hub
repository instead of a folder.

A model reference is a local folder, a Hugging Face Hub id (`user/model`, or `hf://user/model`) or a ModelScope
id (`modelscope://user/model`). Hub references are downloaded (into the hub library's own cache, resumably) by
`local_model_dir` with the hub's client library: `huggingface_hub.snapshot_download` (what `from_pretrained` uses)
or ModelScope's `snapshot_download`. The endpoints come from the libraries' own variables (`HF_ENDPOINT`,
`MODELSCOPE_DOMAIN`), the tokens from theirs (`HF_TOKEN`, `MODELSCOPE_API_TOKEN`) or their logins.
"""

import argparse
import hashlib
import re
from pathlib import Path

HF_PREFIX, MODELSCOPE_PREFIX = "hf://", "modelscope://"
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

# What a model repository needs: weights, config, remote code, tokenizer, generation config, the card.
MODEL_FILE_PATTERNS = (
    "*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "configuration_chat_model.py",
    "modeling_chat_model.py",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "adapter_config.json",
    "README.md",
    "configuration.json",  # ModelScope's framework/task file
)


def finished_model(folder: Path) -> bool:
    """A folder that holds a finished model (or LoRA adapter), as a stage's final save leaves it."""
    folder = Path(folder)
    has_weights = (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))
    return has_weights or (folder / "adapter_config.json").is_file()


def hub_reference(text: str, hub: str | None = None) -> tuple[str, str] | None:
    """(hub, repo id) when `text` names a hub repository rather than a local folder, else None. `hub`
    ("hf" or "modelscope") says which hub a bare `user/model` id is on (default: the Hugging Face Hub)."""
    if not text or Path(text).exists():
        return None
    for prefix, name in ((HF_PREFIX, "hf"), (MODELSCOPE_PREFIX, "modelscope")):
        if text.startswith(prefix):
            return name, text[len(prefix) :]
    if _REPO_ID.fullmatch(text):
        return hub or "hf", text
    return None


def model_reference_problem(text: str, key: str) -> str | None:
    """Why `text` is not a usable model reference (a folder, or a hub id), or None."""
    if not text:
        return f"{key}: give a model directory or a hub id"
    if Path(text).is_dir() or hub_reference(text):
        return None
    return f"{key}: no such model directory: '{text}' (nor a hub id such as user/model or modelscope://user/model)"


def local_model_dir(reference: str | Path, hub: str | None = None, revision: str | None = None) -> Path:
    """The local folder of a model reference: the folder itself, or the hub repository's files downloaded (only
    the model's files; a second call finds them in the cache)."""
    found = hub_reference(str(reference), hub)
    if found is None:
        return Path(reference)
    name, repo_id = found
    try:
        if name == "modelscope":
            from modelscope import snapshot_download as modelscope_download

            folder = modelscope_download(
                repo_id, revision=revision or "master", allow_patterns=list(MODEL_FILE_PATTERNS)
            )
            return Path(folder)
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(MODEL_FILE_PATTERNS)))
    except Exception as error:  # the hub libraries raise many kinds (HTTP, offline, not found, auth)
        from sccl_hf.errors import ModelFolderError

        raise ModelFolderError(
            f"'{reference}' is not a local folder, and the {name} hub did not give it: {type(error).__name__}: {error}"
        ) from error


def existing_model_folder(text: str) -> str:
    """An argparse type for `--model`: a folder or a hub id, refused at once (before anything loads) otherwise."""

    if model_reference_problem(text, "--model"):
        raise argparse.ArgumentTypeError(
            f"no such model folder: '{text}' (nor a hub id such as user/model or modelscope://user/model)"
        )
    return text


def resolve_model_argument(parser, reference: str, hub: str) -> str:
    """`--model` of chat and serve as a local folder: a hub id is downloaded (an argparse error if it fails)."""
    from sccl_hf.errors import ModelFolderError

    try:
        return str(local_model_dir(reference, hub))
    except ModelFolderError as error:
        parser.error(str(error))


def weights_fingerprint(model_dir) -> str:
    """sha256 of the model's weight files: the same only for the same weights."""

    digest = hashlib.sha256()
    for path in sorted(Path(local_model_dir(model_dir)).glob("*.safetensors")):
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
