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
# The playground test (tests/server/test_playground.py) drives a real Chromium; Playwright cannot
# download browsers here, so the dev install asks the system package manager for one.
if [[ ",$extras," == *",dev,"* ]]; then
    if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
        || command -v google-chrome >/dev/null 2>&1; then
        :
    elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium (apt-get) for the playground browser test"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
            || echo "note: apt-get could not install chromium: the playground browser test will be skipped"
    else
        echo "note: no chromium found: install it (e.g. 'sudo apt-get install chromium') to run the"
        echo "      playground browser test, which is skipped otherwise"
    fi
fi
