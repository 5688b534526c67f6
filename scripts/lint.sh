#!/usr/bin/env bash
# Static checks, each failing the run on any finding:
#   Python: ruff (pyproject [tool.ruff]) and mypy on the layers with no tornado/Jupyter server ([tool.mypy]);
#   labextension/: ESLint, Prettier, and the REST API types against jupyter_keyvault/openapi.json.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== ruff"
.venv/bin/ruff check jupyter_keyvault keyvault tests benchmarks scripts examples
echo "== mypy"
.venv/bin/mypy
echo "== labextension: eslint, prettier, API types"
cd labextension
# npm records each install in node_modules/.package-lock.json: missing or older than the lock file
# means node_modules is absent or stale, so install exactly the lock file.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund
fi
npm run lint
if ! npm run check:api; then
    echo "labextension/src/openapi.d.ts is not what jupyter_keyvault/openapi.json generates:" >&2
    echo "run 'npm run generate:api' in labextension/, fix what tsc then reports, and commit both." >&2
    exit 1
fi
