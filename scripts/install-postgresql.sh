#!/usr/bin/env bash
# Install the PostgreSQL server binaries (Debian `postgresql`) for the SQL backend tests.
# Idempotent: does nothing when initdb/pg_ctl are present. The tests start their own
# throwaway cluster (jupyter_keyvault/testing/postgres.py), so no service is started here.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-postgresql: no apt-get; install PostgreSQL yourself or set KEYVAULT_TEST_POSTGRES_URL" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install-postgresql: not root and no sudo; the PostgreSQL tests will skip" >&2
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
echo "install-postgresql: installed $(ls -d /usr/lib/postgresql/*/bin | tail -1)"
