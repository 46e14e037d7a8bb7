#!/usr/bin/env bash
# Install PyTorch into the active Python environment, the right build for this machine:
#   - torch already importable: keep it;
#   - an NVIDIA GPU (nvidia-smi lists one): the default (CUDA) build from the package index;
#   - otherwise the CPU build, torch==$TORCH_VERSION from PyTorch's CPU wheel index, falling back to the
#     configured package index (where a CPU wheel is provided locally, as on our CI machines).
# A plain `pip install torch` on a machine without a GPU would download a multi-GB CUDA build.
set -euo pipefail
PYTHON=${PYTHON:-python}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

if "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "torch $("$PYTHON" -c 'import torch; print(torch.__version__)') already installed"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "NVIDIA GPU found: installing the CUDA build of torch"
    "$PYTHON" -m pip install "torch>=2.13"
else
    echo "no NVIDIA GPU: installing the CPU build of torch==$TORCH_VERSION"
    "$PYTHON" -m pip install "torch==$TORCH_VERSION" --index-url "$TORCH_CPU_INDEX" --timeout 20 --retries 1 \
        || "$PYTHON" -m pip install "torch==$TORCH_VERSION"
fi
