#!/usr/bin/env bash
# The headless browser for tests/test_mlflow_ui.py (idempotent: a second run only checks).
# Debian's chromium from apt (Playwright's own `playwright install` download is not used: the test launches
# the system binary with executable_path), and the Playwright Python package, pinned, into .venv.
# Usage: bash scripts/install_browser.sh   (as root, or with sudo available, for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."
PLAYWRIGHT_VERSION=1.63.0

have_chromium() {
  for bin in chromium chromium-browser google-chrome google-chrome-stable; do
    command -v "$bin" >/dev/null 2>&1 && return 0
  done
  return 1
}

if ! have_chromium; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

[ -x .venv/bin/python ] || { echo "no .venv: run scripts/setup.sh first" >&2; exit 1; }
.venv/bin/python -c "import sys; from importlib.metadata import version; \
sys.exit(version('playwright') != '$PLAYWRIGHT_VERSION')" 2>/dev/null \
  || .venv/bin/python -m pip --disable-pip-version-check install -q "playwright==$PLAYWRIGHT_VERSION"

bin=$(command -v chromium || command -v chromium-browser || command -v google-chrome || command -v google-chrome-stable)
echo "browser ready: $("$bin" --version 2>/dev/null | head -1) ($bin), playwright $(.venv/bin/python -c \
  "from importlib.metadata import version; print(version('playwright'))")"
