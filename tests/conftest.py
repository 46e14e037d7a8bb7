import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]


def missing(message: str):
    """Something a test needs is not on this machine: skipped locally, a failure under CI (CI=true), where every
    test must run."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def need_chromium() -> None:
    import shutil

    if not shutil.which("chromium"):
        missing("needs Debian's chromium (make test installs it)")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $SCCL_SHARED_DATA): real Chinese data that is not part of the project."""
    path = Path(os.environ.get("SCCL_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        missing(f"real-data test needs the shared data folder, which is missing: {path} (set SCCL_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> dict[str, Path]:
    from sccl_hf.demo_corpus import write_corpus

    return write_corpus(tmp_path_factory.mktemp("demo_data"))


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, demo_data) -> Path:
    from sccl_hf.stages.tokenizer import TokenizerArguments, main

    out = tmp_path_factory.mktemp("tokenizer")
    main(
        TokenizerArguments(
            files=[str(demo_data["pretrain"]), str(demo_data["sft"])], vocab_size=856, output_dir=str(out)
        )
    )
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A randomly initialised `tiny` model saved in the self-contained layout."""
    from transformers import set_seed

    from sccl_hf.model import build_config, load_tokenizer, new_model, save_model_dir

    set_seed(0)
    tokenizer = load_tokenizer(tokenizer_dir)
    model = new_model(build_config("tiny", tokenizer, max_seq_len=64))
    return save_model_dir(model, tokenizer, tmp_path_factory.mktemp("tiny_model"))


ANSWERING_PROMPTS = ["浙江的省会是哪里？", "大的反义词是什么？", "3加5等于多少？", "把37写成汉字。", "江苏的省会是哪里？",
                     "高的反义词是什么？", "十二加三等于多少？", "你好"]  # fmt: skip
# what the answering model is fitted towards, for a few seconds: long, with repeated words (so that repetition
# settings change what it says), and of different lengths (so that answers end at different steps)
ANSWERING_TARGETS = [
    "杭州是浙江的省会，也是一座有名的历史文化名城，西湖就在杭州。",
    "大的反义词是小，高的反义词是低，长的反义词是短。",
    "三加五等于八，八减五等于三，三加三等于六，六加二等于八。",
    "三十七写成汉字是三十七，也可以写成大写的叁拾柒。",
    "南京是江苏的省会，南京在长江边上，南京有很多大学和很多古迹。",
    "高的反义词是矮，也可以说是低，要看说的是什么。",
    "十二加三等于十五，十五加三等于十八，十八加三等于二十一。",
    "你好，很高兴认识你，有什么可以帮你的吗？我可以回答问题，也可以和你聊天。",
]


@pytest.fixture(scope="session")
def answering_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A `tiny` model that answers: fitted towards ANSWERING_TARGETS in rounds of 5 steps until its greedy answers
    are long, varied and different for every prompt, close to the targets but not learnt by heart, and every
    greedy step the tests compare across computations is won by a margin (helpers/answering.py lists each
    property and the test that needs it). A random model's answers are [PAD] after [PAD], or one token repeated:
    they prove nothing about generation. How many steps that takes depends on how the machine rounds (45 to 225
    here); the properties do not."""
    from transformers import set_seed

    from helpers import answering
    from sccl_hf.model import build_config, load_tokenizer, new_model, save_model_dir

    set_seed(0)
    tokenizer = load_tokenizer(tokenizer_dir)
    model = new_model(build_config("tiny", tokenizer, max_seq_len=64))
    steps, reached = answering.fit(model, tokenizer, ANSWERING_PROMPTS, ANSWERING_TARGETS, max_steps=600)
    assert reached.ok, f"after {steps} steps the answering model still fails {reached.failing()}: {reached.figures}"
    return save_model_dir(model, tokenizer, tmp_path_factory.mktemp("answering_model"))


FIXED_ROWS = [
    {"prompt": "浙江的省会是哪里？", "response": "杭州"},
    {"prompt": "大的反义词是什么？", "response": "小"},
    {"prompt": "3加5等于多少？", "response": "8"},
    {"prompt": "把37写成汉字。", "response": "三十七"},
]


@pytest.fixture(scope="session")
def fixed_rows_file(tmp_path_factory) -> Path:
    return write_parquet(tmp_path_factory.mktemp("fixed") / "fixed.parquet", FIXED_ROWS)


@pytest.fixture(scope="session")
def trained_model_dir(tmp_path_factory, tokenizer_dir, fixed_rows_file) -> Path:
    """A `tiny` model pretrained for 30 steps on four fixed rows: it answers them exactly, each greedy step won by
    7.8 to 9.1 in the logits (measured 2026-12-07), a margin no rounding crosses."""
    from sccl_hf.stages import run_recipe

    out = tmp_path_factory.mktemp("pretrained")
    run_recipe(str(ROOT / "recipes" / "demo" / "pretrain.yaml"), [
        "--preset", "tiny", "--tokenizer_dir", str(tokenizer_dir), "--train_files", str(fixed_rows_file),
        *quick(out, 30, "--learning_rate", "3e-3", "--warmup_steps", "0"),
    ])  # fmt: skip
    return out


def quick(output_dir, steps, *extra) -> list[str]:
    """Overrides for a short training run: `steps` steps, a loss logged at every one, batches of 4."""
    return ["--output_dir", str(output_dir), "--max_steps", str(steps), "--logging_steps", "1",
            "--disable_tqdm", "true", "--per_device_train_batch_size", "4", *extra]  # fmt: skip


def run_sft(model_dir, train_file, output_dir, steps, *extra):
    """The demo's SFT recipe, `steps` steps on `train_file` from `model_dir` into `output_dir`."""
    from sccl_hf.stages import run_recipe

    run_recipe(ROOT / "recipes" / "demo" / "sft.yaml",
               ["--model_name_or_path", str(model_dir), "--train_files", str(train_file), *quick(output_dir, steps, *extra)])  # fmt: skip


def accelerate_launch(port: int, *args, timeout: int = 300):
    """`accelerate launch` with two CPU processes (gloo): a real distributed run."""
    import subprocess

    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
               "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
               *map(str, args)]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def run_python(code: str, cwd: Path, timeout: int = 180):
    """Run `code` in a fresh interpreter (nothing imported from this test process)."""
    import subprocess

    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout)


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=60000", "--run-all-compositor-stages-before-draw"]  # fmt: skip


def page_dom(url: str, profile: Path, ready: str, screenshot: Path | None = None, tries: int = 5) -> str:
    """The DOM of `url` in headless Chromium once it contains `ready`. Chromium's virtual time sometimes ends the
    page before a streamed answer has arrived, so the page is loaded again (up to `tries` times) until it has."""
    import subprocess

    dom = ""
    for attempt in range(tries):
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}-{attempt}"]
        dom = subprocess.run(
            ["chromium", *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
        ).stdout
        if ready in dom:
            break
    if screenshot is not None:
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}-shot"]
        subprocess.run(["chromium", *flags, f"--screenshot={screenshot}", "--window-size=900,600", url],
                       capture_output=True, timeout=120)  # fmt: skip
    return dom


@pytest.fixture(autouse=True)
def autocast_restored():
    """Each test starts with this thread's autocast as the one before it found it: a test that trains with TRL's
    bf16 defaults directly (not through a stage) can leave CPU autocast on, and later tests would compute in bf16."""
    import torch

    saved = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
    yield
    torch.set_autocast_enabled("cpu", saved[0])
    torch.set_autocast_dtype("cpu", saved[1])
