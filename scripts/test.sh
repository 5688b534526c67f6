#!/usr/bin/env bash
# Set up and run every check: the test suite, bandit, and a dependency audit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install-postgresql.sh
bash scripts/install-chp.sh
bash scripts/install-chromium.sh  # browser tests (tests/test_browser_*.py)
bash scripts/install-uid-venv.sh  # JupyterHub users in their own uids (tests/test_hub_uids.py)
echo "== static checks (ruff, mypy, labextension lint)"
bash scripts/lint.sh
echo "== pytest (a skip for a missing real part fails here: everything is installed above)"
KEYVAULT_STRICT_SKIPS=1 .venv/bin/python -m pytest -q -rs "$@"
echo "== bandit (fails on medium/high findings)"
.venv/bin/bandit -q -r jupyter_keyvault keyvault -c pyproject.toml -ll
echo "== pip-audit (fails on known vulnerabilities in direct dependencies)"
.venv/bin/python scripts/audit_deps.py
