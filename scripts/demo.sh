#!/usr/bin/env bash
# Install everything, then run the main job on the bundled sample data.
# With a display: napari opens with the results loaded. Without one (or with --headless):
# the same pipeline runs under a virtual X server and writes everything to an output folder.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
headless=0
for a in "$@"; do [ "$a" = "--headless" ] && headless=1; done
if [ -z "${DISPLAY:-}" ] || [ "$headless" = 1 ]; then
  [ "$headless" = 1 ] || set -- --headless "$@"
  exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/astrosr demo "$@"
fi
exec .venv/bin/astrosr demo "$@"
