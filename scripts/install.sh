#!/usr/bin/env bash
# Install gptlab (editable) into a virtual environment, ./.venv unless GPTLAB_VENV says otherwise.
#   bash scripts/install.sh            # the library and its CLI, with the plot and neurons extras
#   bash scripts/install.sh dev        # plus everything the tests need
# PyTorch: if the venv can already import torch (e.g. a CUDA build you installed), it is kept.
# Otherwise we install the CPU build named by GPTLAB_TORCH (default torch==2.13.0), so that the
# plain dependency range never pulls a multi-GB CUDA wheel by accident.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-plot,neurons}"
venv="${GPTLAB_VENV:-.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
py="$venv/bin/python"
if ! "$py" -c "import torch" >/dev/null 2>&1; then
    "$py" -m pip install --quiet "${GPTLAB_TORCH:-torch==2.13.0}"
fi
"$py" -m pip install --quiet -e ".[$extras]"
