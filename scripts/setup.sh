#!/usr/bin/env bash
# Install everything napari-astrosr needs (all extras + test tools) into .venv (system packages included when root).
# Idempotent and quick when nothing changed: a stamp records what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS="xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xinerama0 \
libxcb-xkb1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-shape0 libgl1 libegl1 libfontconfig1 libdbus-1-3"

missing=""
if command -v dpkg-query >/dev/null 2>&1; then
  for p in $APT_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
fi
if [ -n "$missing" ]; then
  echo "[setup] installing system packages:$missing" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv" >&2
  "$PY" -m venv .venv
fi
stamp=.venv/.astrosr-installed
want="$(cat pyproject.toml scripts/setup.sh scripts/constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing Python packages into .venv (first time takes a few minutes)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: the CPU build lies on this kind of machine's disk; an unpinned
  # torch would pull a multi-GB CUDA build. On a GPU machine, install your CUDA torch first.
  .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
  # known-good versions (scripts/constraints.txt): a new upstream release cannot break a fresh install
  .venv/bin/python -m pip install -q -c scripts/constraints.txt -e ".[all,test]"
  echo "$want" > "$stamp"
fi
