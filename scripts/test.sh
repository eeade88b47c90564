#!/usr/bin/env bash
# Install everything, then run the whole test suite (GUI tests under Xvfb via pytest-xvfb).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
