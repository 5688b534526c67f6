#!/usr/bin/env bash
# Debian chromium for the browser tests (Playwright drives it via executable_path; no `playwright install`).
# Idempotent: does nothing when /usr/bin/chromium exists. Needs root (or sudo) on Debian/Ubuntu.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
