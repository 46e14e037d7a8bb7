"""Publishing a model folder to the Hugging Face Hub or ModelScope, with a generated model card.

What is pushed is the self-contained model and nothing else (`MODEL_FILE_PATTERNS`: weights, config with
`auto_map`, the remote-code files, tokenizer, generation config) plus a generated `README.md`; checkpoints,
optimizer states and logs stay behind unless `include` asks for them. The upload goes through the hubs' own
client libraries (`huggingface_hub`: create_repo, upload_folder with its large-file handling; `modelscope`'s
HubApi), which skip files the hub already holds, so an interrupted push run again sends only what is missing.
"""

import fnmatch
import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from safetensors import safe_open

from sccl_hf.errors import SCCLError
from sccl_hf.model_folder import MODEL_FILE_PATTERNS

HUBS = ("hf", "modelscope")
EVAL_STAGES = ("eval_gen", "eval_ppl", "eval_choice", "eval_ie")
TASK_TYPES = {"eval_choice": "multiple-choice"}  # the others score generated or scored text: text2text-generation


class PublishError(SCCLError):
    """A push that cannot go on (no token, a rejected token, a folder that is not a model)."""


@dataclass
class UploadFile:
    path: str  # in the repository
    size: int


def files_to_push(folder: Path, include: list[str] | tuple = ()) -> list[UploadFile]:
    """The folder's files that make the model (and those matching `include`), never from subfolders such as
    checkpoint-*/ unless `include` names them (e.g. "checkpoint-100/*")."""
    folder = Path(folder)
    chosen = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        top_level = "/" not in relative
        if (top_level and any(fnmatch.fnmatch(relative, p) for p in MODEL_FILE_PATTERNS if p != "README.md")) or any(
            fnmatch.fnmatch(relative, p) for p in include
        ):
            chosen.append(UploadFile(relative, path.stat().st_size))
    return chosen


# -- the model card ---------------------------------------------------------------------------------------------


def _read(path: Path) -> dict:
    try:
        if path.suffix == ".json":
            return json.loads(path.read_text(encoding="utf-8"))
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, ValueError, yaml.YAMLError):
        return {}


def lineage(folder: Path) -> list[dict]:
    """The stages that made the model, oldest first: each stage's saved recipe and results, followed through the
    model (or tokenizer, base model) it started from while those folders are here."""
    chain, seen, current = [], set(), Path(folder)
    while current is not None and current.resolve() not in seen and (current / "recipe.yaml").is_file():
        seen.add(current.resolve())
        recipe = _read(current / "recipe.yaml")
        record = _read(current / "results.json")
        chain.append({"folder": current, "recipe": recipe, "results": record.get("results", {}), "record": record})
        source = next((recipe[k] for k in ("model_name_or_path", "base_model", "tokenizer_dir") if recipe.get(k)), None)
        current = Path(source) if source and Path(source).is_dir() else None
    return list(reversed(chain))


def evaluations(folder: Path, search: list[Path] | None = None) -> list[dict]:
    """Every evaluation stage's results found for this model: results.json files under `search` (default: the
    folder's parent, which holds its run) whose `model` is this folder."""
    folder = Path(folder).resolve()
    found = []
    for root in search or [folder.parent]:
        for path in sorted(Path(root).rglob("results.json")):
            record = _read(path)
            results = record.get("results")
            if record.get("stage") in EVAL_STAGES and isinstance(results, dict) and results.get("model"):
                if Path(results["model"]).resolve() == folder:
                    found.append({"folder": path.parent, "stage": record["stage"], "results": results})
    return found


def _figure(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def evaluation_rows(evaluation: dict) -> list[tuple[str, str, str]]:
    """(evaluation, metric, value) rows for the card; values are the results.json numbers to 4 decimals."""
    stage, results = evaluation["stage"], evaluation["results"]
    name = evaluation["folder"].name
    if stage == "eval_choice":
        label = f"{results['benchmark']} {results['split']} {results['num_fewshot']}-shot"
        return [
            (label, f"accuracy ({method}, {summary['overall']['questions']} questions)",
             _figure(summary["overall"]["accuracy"]))
            for method, summary in results["methods"].items()
        ]  # fmt: skip
    keys = {
        "eval_gen": ("exact_match", "bleu4", "rouge_l", "ended_with_eos"),
        "eval_ppl": ("loss", "perplexity", "bits_per_character"),
        "eval_ie": ("precision", "recall", "f1"),
    }[stage]
    label = f"{stage} ({name}, {results.get('rows', '?')} rows)"
    return [(label, key, _figure(results[key])) for key in keys if key in results]


def eval_results(found: list[dict]) -> list[EvalResult]:
    """The evaluations as the Hub's `model-index` metadata (shown on the model page, searchable): one result per
    figure of the card's evaluation table, the same numbers."""
    results = []
    for evaluation in found:
        for label, metric, value in evaluation_rows(evaluation):
            results.append(
                EvalResult(
                    task_type=TASK_TYPES.get(evaluation["stage"], "text2text-generation"),
                    dataset_type=evaluation["results"].get("benchmark") or evaluation["folder"].name,
                    dataset_name=label,
                    metric_type=metric.split(" ")[0],
                    metric_name=metric,
                    metric_value=float(value),
                )
            )
    return results


def model_card(
    folder: Path, repo_id: str, license: str = "apache-2.0", datasets: list[str] = (), eval_search=None
) -> str:
    """README.md for the repository (`huggingface_hub.ModelCard`): metadata (license, language, library, tags,
    datasets, the evaluation results as `model-index`), then size and architecture, the stages and data that made
    the model, its evaluation results and how to use it."""
    folder = Path(folder)
    config = _read(folder / "config.json")
    found = evaluations(folder, eval_search)
    card_data = ModelCardData(
        license=license,
        language=["zh"],
        library_name="transformers",
        pipeline_tag="text2text-generation",
        tags=["t5", "text2text-generation", "chinese", "chat", "sccl-hf"],
        datasets=list(datasets) or None,
        model_name=repo_id,
        eval_results=eval_results(found) or None,
    )
    parameters = parameter_count(folder)
    lines = ["---", card_data.to_yaml(), "---", "", f"# {repo_id}", ""]
    lines += [
        "A Chinese text-to-text chat model (T5 encoder-decoder) trained from scratch with sccl-hf's recipes, the "
        "way [ChatLM-mini-Chinese](https://github.com/charent/ChatLM-mini-Chinese) trained its 0.2B model.",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        f"| parameters | {parameters:,} ({parameters / 1e6:.1f}M) |",
        f"| architecture | T5 (`model_type: {config.get('model_type', 't5')}`), {config.get('num_layers')} encoder + "
        f"{config.get('num_decoder_layers')} decoder layers, d_model {config.get('d_model')}, "
        f"{config.get('num_heads')} heads, d_ff {config.get('d_ff')} |",
        f"| vocabulary | {config.get('vocab_size')} tokens (`[PAD]`=0, `[EOS]`=1) |",
        f"| max_seq_len | {config.get('max_seq_len')} tokens |",
    ]
    stages = lineage(folder)
    if stages:
        lines += ["", "## How it was made", "", "| stage | data | steps | final loss |", "|---|---|---|---|"]
        for stage in stages:
            recipe, results = stage["recipe"], stage["results"]
            data = recipe.get("train_files") or recipe.get("files") or recipe.get("sources") or []
            data = (
                ", ".join(f"`{d}`" for d in data)
                if isinstance(data, list) and all(isinstance(d, str) for d in data)
                else "-"
            )
            lines.append(
                f"| {recipe.get('stage')} | {data} | {results.get('steps', '-')} | "
                f"{_figure(results['final_loss']) if results.get('final_loss') is not None else '-'} |"
            )
    if found:
        lines += ["", "## Evaluation", "", "| evaluation | metric | value |", "|---|---|---|"]
        lines += [f"| {e} | {m} | {v} |" for evaluation in found for e, m, v in evaluation_rows(evaluation)]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
        f'model = AutoModelForSeq2SeqLM.from_pretrained("{repo_id}", trust_remote_code=True)',
        'batch = tokenizer(["浙江的省会是哪里？"], return_tensors="pt")',
        'output = model.my_generate(batch["input_ids"], batch["attention_mask"], max_seq_len=64, search_type="greedy")',
        "print(tokenizer.batch_decode(output, skip_special_tokens=True)[0])",
        "```",
        "",
        "`search_type`: greedy, beam, sampling or contrastive. On ModelScope, download with "
        "`modelscope.snapshot_download` and load the folder the same way.",
        "",
    ]
    return str(ModelCard("\n".join(lines)))


def parameter_count(folder: Path) -> int:
    """Parameters in the folder's safetensors files, read from their headers (nothing loaded; a tied matrix
    stored once counts once)."""
    total = 0
    for path in Path(folder).glob("*.safetensors"):
        with safe_open(path, "np") as f:
            total += sum(math.prod(f.get_slice(name).get_shape()) for name in f.keys())
    return total


# -- pushing ----------------------------------------------------------------------------------------------------


@dataclass
class PushPlan:
    folder: Path
    repo_id: str
    hub: str
    files: list[UploadFile]  # from the folder, plus the generated card (and ModelScope's configuration.json)
    card: str


def plan_push(folder, repo_id: str, hub: str = "hf", include=(), license="apache-2.0", datasets=(), eval_search=None):
    folder = Path(folder)
    if hub not in HUBS:
        raise PublishError(f"hub: must be one of {', '.join(HUBS)}, got '{hub}'")
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise PublishError(f"{folder}: not a model folder (no config.json or adapter_config.json)")
    if not any(folder.glob("*.safetensors")):
        raise PublishError(f"{folder}: no safetensors weights to push")
    card = model_card(folder, repo_id, license, datasets, eval_search)
    files = files_to_push(folder, include)
    files = [f for f in files if f.path not in ("README.md", "configuration.json")]
    files.append(UploadFile("README.md", len(card.encode("utf-8"))))
    if hub == "modelscope":
        files.append(UploadFile("configuration.json", len(_modelscope_configuration())))
    return PushPlan(folder, repo_id, hub, sorted(files, key=lambda f: f.path), card)


def _modelscope_configuration() -> bytes:
    """ModelScope's model repositories carry configuration.json (framework and task)."""
    return json.dumps({"framework": "pytorch", "task": "text2text-generation"}, indent=2).encode("utf-8") + b"\n"


def stage_folder(plan: PushPlan, target: Path) -> Path:
    """A folder holding exactly what is pushed: links to the model's files, and the generated files."""
    for upload in plan.files:
        destination = target / upload.path
        destination.parent.mkdir(parents=True, exist_ok=True)
        if upload.path == "README.md":
            destination.write_text(plan.card, encoding="utf-8")
        elif upload.path == "configuration.json" and plan.hub == "modelscope":
            destination.write_bytes(_modelscope_configuration())
        else:
            try:
                destination.hardlink_to((plan.folder / upload.path).resolve())
            except OSError:  # another file system
                shutil.copy2(plan.folder / upload.path, destination)
    return target


def push(plan: PushPlan, private: bool = False, revision: str | None = None, token: str | None = None) -> str:
    """Upload the plan's files; returns the repository's URL. The token is checked with the hub before anything
    is uploaded."""
    with tempfile.TemporaryDirectory(prefix="sccl-push-") as staging:
        folder = stage_folder(plan, Path(staging))
        if plan.hub == "hf":
            return _push_hf(plan, folder, private, revision, token)
        return _push_modelscope(plan, folder, private, revision, token)


def _push_hf(plan: PushPlan, folder: Path, private: bool, revision: str | None, token: str | None) -> str:
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import HfHubHTTPError

    token = token or get_token()
    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN (or log in with `hf auth login`); nothing was uploaded")
    api = HfApi(token=token)
    try:
        user = api.whoami()
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else "?"
        raise PublishError(
            f"the Hugging Face Hub at {constants.ENDPOINT} rejected the token (HTTP {status}); nothing was uploaded"
        ) from error
    print(f"push: as {user.get('name')} to {constants.ENDPOINT}/{plan.repo_id}")
    try:
        url = api.create_repo(plan.repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(plan.repo_id, branch=revision, exist_ok=True)
        api.upload_folder(
            repo_id=plan.repo_id,
            folder_path=folder,
            revision=revision,
            commit_message=f"Upload {plan.folder.name} with sccl-hf",
        )
    except (HfHubHTTPError, ValueError) as error:  # ValueError: the hub found the card's metadata invalid
        raise PublishError(f"the Hugging Face Hub refused the upload to {plan.repo_id}: {error}") from error
    return str(url)


def _push_modelscope(plan: PushPlan, folder: Path, private: bool, revision: str | None, token: str | None) -> str:
    """ModelScope's HubApi (the `modelscope` package's hub client). Its upload tracker is kept in the model
    folder (`.ms_upload_cache`, never pushed), so a push run again after an interruption skips what was done."""
    from modelscope_hub import HubApi
    from modelscope_hub.errors import AuthenticationError, HubError

    api = HubApi(token=token) if token else HubApi()  # else MODELSCOPE_API_TOKEN or `modelscope login`
    endpoint = api._config.endpoint or "https://www.modelscope.cn"  # where MODELSCOPE_ENDPOINT points
    try:
        user = api.whoami()
    except AuthenticationError as error:
        raise PublishError(
            f"ModelScope at {endpoint} did not accept the token ({error}); set MODELSCOPE_API_TOKEN or log in "
            "with `modelscope login`; nothing was uploaded"
        ) from error
    except HubError as error:
        raise PublishError(f"ModelScope at {endpoint} could not check the token: {error}") from error
    print(f"push: as {user.username} to {endpoint}/models/{plan.repo_id}")
    try:
        try:
            api.create_repo(plan.repo_id, "model", visibility="private" if private else "public")
        except HubError as error:
            if "exist" not in str(error).lower():
                raise
        api.upload_folder(
            plan.repo_id,
            "model",
            folder,
            commit_message=f"Upload {plan.folder.name} with sccl-hf",
            revision=revision or "master",
            tracker_path=plan.folder / ".ms_upload_cache",
        )
    except HubError as error:
        raise PublishError(f"ModelScope refused the upload to {plan.repo_id}: {error}") from error
    return f"{endpoint}/models/{plan.repo_id}"


def describe_plan(plan: PushPlan) -> str:
    """What a dry run prints: every file and its size, then the card."""
    total = sum(f.size for f in plan.files)
    lines = [f"would push {len(plan.files)} files ({total / 1e6:.2f} MB) to {plan.hub}:{plan.repo_id}"]
    lines += [f"  {f.size:>12,}  {f.path}" for f in plan.files]
    lines += ["", "README.md (the model card):", "", plan.card]
    return "\n".join(lines)
