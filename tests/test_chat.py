import subprocess
import sys

import pytest

from sccl_hf.apps.chat import read_message

pytestmark = pytest.mark.slow  # training runs, real processes and servers


def test_terminal_chat_streams_answers_and_obeys_commands(trained_model_dir):
    script = (
        "\n".join(
            [
                "浙江的省会是哪里？",
                "/search sampling",
                "/max 4",
                "大的反义词\\",
                "是什么？",
                "/search beam",
                "3加5等于多少？",
                "/bogus",
                "/clear",
                "/exit",
                "never read",
            ]
        )
        + "\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from sccl_hf.cli import main; main()",
            "chat",
            "--model",
            str(trained_model_dir),
            "--max-new-tokens",
            "8",
        ],
        input=script,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "模型: 杭州" in out
    assert "search type: sampling" in out and "max new tokens: 4" in out and "search type: beam" in out
    assert "模型: 8" in out  # beam search prints its answer when done
    assert out.count("tokens/s") == 3
    assert "unknown command '/bogus'" in out and "\033[2J" in out
    assert out.rstrip().endswith("bye")


def test_multi_line_messages():
    lines = iter(['"""', "第一行", "第二行", '"""'])
    assert read_message(lambda prompt: next(lines)) == "第一行\n第二行"
    lines = iter(["一\\", "二\\", "三"])
    assert read_message(lambda prompt: next(lines)) == "一\n二\n三"

    def end_of_input(prompt):
        raise EOFError

    assert read_message(end_of_input) is None
