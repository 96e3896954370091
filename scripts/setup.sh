#!/usr/bin/env bash
# One-command setup: creates .venv at the repo root and installs the pinned runtime and test dependencies.
# torch (test-only, the PyTorch oracle) goes first so pip takes the local CPU build instead of resolving a CUDA one.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# The environment takes ~4 GB (MindSpore 2.5, torch 0.8); say so up front rather than let pip fail half-way.
free_kb=$(df -Pk . | awk 'NR==2 {print $4}')
if [ "${free_kb:-0}" -lt $((5 * 1024 * 1024)) ] && [ ! -x .venv/bin/python ]; then
    echo "warning: $((free_kb / 1024)) MB free on $(df -P . | awk 'NR==2 {print $6}'); .venv needs about 4.5 GB" \
         "(free some space if pip stops with 'No space left on device')" >&2
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -r requirements.txt -r tests/requirements.txt
# dashscope ships the real Qwen BPE ranks (resources/qwen.tiktoken); only that data file is used, so its many
# service dependencies are skipped.
.venv/bin/python -m pip install --quiet --no-deps "dashscope==2.0.2"
# Make the repository importable by the venv's python from any directory (`import emu3`, `import train`).
"$(pwd)/.venv/bin/python" - <<'PY'
import os, sysconfig
with open(os.path.join(sysconfig.get_paths()["purelib"], "emu3-mindspore.pth"), "w") as f:
    f.write(os.getcwd() + "\n")
PY
.venv/bin/python -c "import mindspore, numpy, torch, transformers; print('setup ok: mindspore', mindspore.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
