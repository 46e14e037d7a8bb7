"""Launch presets in configs/accelerate/: each one parses as accelerate reads it and points at what it needs.
(The two-process CPU preset runs for real in test_training.py.)"""

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from sccl_hf.launch import preset_names, resolved_preset

PRESETS = ["cpu_two_processes", "deepspeed_zero2", "deepspeed_zero2_offload", "deepspeed_zero3",
           "deepspeed_zero3_offload", "fsdp", "multi_gpu", "single_device"]  # fmt: skip


def test_the_presets_are_there():
    assert preset_names() == PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_is_valid_for_accelerate(name, tmp_path, tiny_model_dir):
    import yaml
    from accelerate.commands.config.config_args import load_config_from_file

    config = resolved_preset(name, {"num_processes": 4})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config_from_file(str(path))  # accelerate's own parser and checks
    assert loaded.num_processes == 4 and loaded.mixed_precision == "no"
    if name.startswith("deepspeed"):
        settings = json.loads(open(config["deepspeed_config"]["deepspeed_config_file"]).read())
        zero = settings["zero_optimization"]
        assert zero["stage"] == int(name[len("deepspeed_zero")])
        assert ("offload_optimizer" in zero) == name.endswith("offload")
        assert ("offload_param" in zero) == (name == "deepspeed_zero3_offload")
        assert settings["bf16"]["enabled"] == "auto"  # follows the recipe's bf16
        assert loaded.deepspeed_config["zero3_init_flag"] == (zero["stage"] == 3)
    if name == "fsdp":
        from sccl_hf.model import load_model

        wrap = loaded.fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
        assert wrap in {type(m).__name__ for m in load_model(tiny_model_dir).modules()}
        assert loaded.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"


def test_launcher_options_are_checked_before_launching(tmp_path):
    def sccl(*args):
        return subprocess.run([sys.executable, "-m", "sccl_hf.cli", "run", str(ROOT / "recipes/demo/pretrain.yaml"),
                               *args], capture_output=True, text=True, timeout=60)  # fmt: skip

    unknown = sccl("--accelerate_config", "nine_gpus")
    assert unknown.returncode == 2 and "no preset 'nine_gpus'; presets are cpu_two_processes" in unknown.stderr
    alone = sccl("--num_processes", "2")
    assert alone.returncode == 2 and "--num_processes goes with --accelerate_config" in alone.stderr
