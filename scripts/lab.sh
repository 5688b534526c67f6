#!/usr/bin/env bash
# The main job: JupyterLab with the vault on its embedded default store and the example notebook.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
args=(--ip 127.0.0.1)
if [ "$(id -u)" = 0 ]; then args+=(--allow-root); fi
echo "jupyter-keyvault: vault status before start:"
.venv/bin/jupyter keyvault status || true
exec .venv/bin/jupyter lab "${args[@]}" "$@" examples/getting-started.ipynb
