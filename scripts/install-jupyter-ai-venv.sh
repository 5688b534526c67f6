#!/usr/bin/env bash
# A second environment with jupyter-ai 3.x (the `jupyter-ai` extra) for tests/test_jupyter_ai.py.
# Kept apart from .venv: jupyter-ai enables a dozen server and lab extensions in every Jupyter of
# the environment it lands in, which the other tests and the README's JupyterLab do not want.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-jupyter-ai
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test,jupyter-ai]"
