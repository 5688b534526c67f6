#!/usr/bin/env bash
# Install configurable-http-proxy (JupyterHub's proxy, from npm) for the real-JupyterHub tests.
# Idempotent: does nothing when it is already on PATH. Works as root on a fresh Debian machine.
set -euo pipefail
if command -v configurable-http-proxy >/dev/null 2>&1; then
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq nodejs npm >/dev/null
fi
npm install -g --silent configurable-http-proxy
command -v configurable-http-proxy >/dev/null
