#!/usr/bin/env bash
# Sets up everything the project needs in .venv/ (idempotent; a second run takes seconds).
#   ./setup.sh          runtime dependencies (the app, training, evaluation)
#   ./setup.sh --test   plus the test extras and Debian's chromium for the browser tests
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
requirements=requirements.txt
[ "${1:-}" = "--test" ] && requirements=requirements-test.txt

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(cat requirements.txt "$requirements" | sha256sum | cut -c1-16)-$(basename "$requirements")"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r "$requirements"
  touch "$stamp"
fi

if [ "${1:-}" = "--test" ] && [ ! -x /usr/bin/chromium ]; then
  echo "Installing Debian's chromium for the browser tests..."
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
