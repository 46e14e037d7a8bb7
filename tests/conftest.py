import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $SCCL_SHARED_DATA): real Chinese data that is not part of the project."""
    path = Path(os.environ.get("SCCL_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        message = f"real-data test needs the shared data folder, which is missing: {path} (set SCCL_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> dict[str, Path]:
    from sccl_hf.demo_corpus import write_corpus

    return write_corpus(tmp_path_factory.mktemp("demo_data"))


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, demo_data) -> Path:
    from sccl_hf.train_tokenizer import TokenizerArguments, main

    out = tmp_path_factory.mktemp("tokenizer")
    main(TokenizerArguments(files=[str(demo_data["pretrain"]), str(demo_data["sft"])], vocab_size=600, output_dir=str(out)))
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


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def run_python(code: str, cwd: Path, timeout: int = 180):
    """Run `code` in a fresh interpreter (nothing imported from this test process)."""
    import subprocess

    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout)
