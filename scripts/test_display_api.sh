#!/usr/bin/env bash
# Run astropy's Astronomical Image Display API conformance suite (astro-image-display-api,
# Python >= 3.12) against napari-astrosr's napari-backed viewer, in its own venv .venv312.
# Idempotent: a stamp records what was installed. Skips cleanly (exit 0) without Python 3.12.
# torch is NOT installed there: the display API needs none of it (pip install --no-deps -e .).
set -euo pipefail
cd "$(dirname "$0")/.."

PY312=${PYTHON312:-}
if [ -z "$PY312" ]; then
  # a pyenv shim can exist without a usable 3.12 behind it: run each candidate to be sure
  for c in "$HOME/.pyenv/versions/3.12"*/bin/python3.12 python3.12; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then
      PY312=$(command -v "$c"); break
    fi
  done
fi
if [ -z "$PY312" ]; then
  echo "[display-api] SKIPPED: no Python 3.12 found (set PYTHON312=/path/to/python3.12)" >&2
  exit 0
fi

V=.venv312
if [ ! -x "$V/bin/python" ]; then
  echo "[display-api] creating $V with $PY312" >&2
  "$PY312" -m venv "$V"
fi
stamp=$V/.astrosr-display-api-installed
want="$(cat pyproject.toml scripts/test_display_api.sh scripts/constraints312.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[display-api] installing packages into $V (first time takes a few minutes)" >&2
  "$V/bin/python" -m pip install -q --upgrade pip
  # the package's runtime deps except torch/dask (not needed to display images)
  "$V/bin/python" -m pip install -q -c scripts/constraints312.txt "numpy>=1.24" "scipy>=1.10" "astropy>=6.0" "sep>=1.2" \
    "photutils>=1.12" "reproject>=0.13" "scikit-image>=0.22" "regions>=0.8" "pyyaml>=6" \
    "pydantic>=2.5" "matplotlib>=3.7" "tqdm>=4.60" "threadpoolctl>=3.1" "napari>=0.5" \
    "magicgui>=0.8" PyQt6 "pytest>=8" "pytest-qt>=4.4" "pytest-xvfb>=3" \
    "astro-image-display-api>=0.3,<0.4"
  "$V/bin/python" -m pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi
exec "$V/bin/python" -m pytest tests/gui/test_image_display_api.py -p no:cacheprovider "$@"
