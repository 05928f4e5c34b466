#!/usr/bin/env bash
# Make sure the browser tests (tests/dashboard/test_browser.py) have what they need: Debian's Chromium at
# /usr/bin/chromium with fonts, and the playwright Python package (from pyproject's dev extras). Idempotent.
# Never `playwright install`: the tests drive Debian's Chromium, not a downloaded browser.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium fonts-liberation >/dev/null
fi
if ! .venv/bin/python -c 'import playwright' 2>/dev/null; then
  .venv/bin/python -m pip install --quiet -e '.[dev]'
fi
