#!/usr/bin/env bash
# A Python environment other system users can run, for the JupyterHub tests whose users have their
# own uids (tests/test_hub_uids.py): the main .venv's interpreter may live where only root can
# execute it (e.g. under /root). Built from Debian's python3, at /opt/jupyter-keyvault-uid-venv
# (world-readable), with this checkout installed in it. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${KEYVAULT_UID_VENV:-/opt/jupyter-keyvault-uid-venv}
if ! command -v /usr/bin/python3 >/dev/null || ! /usr/bin/python3 -c "import ensurepip" 2>/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq python3 python3-venv >/dev/null
fi
if [ ! -x "$VENV/bin/python" ]; then
    /usr/bin/python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
# Non-editable: the package is copied in, so nothing under this checkout must be readable by the users.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps .
"$VENV/bin/python" -m pip install -q --disable-pip-version-check ".[hub]" jupyterhub ipykernel
chmod -R a+rX "$VENV"
