#!/usr/bin/env bash
# Train CONFIG in chunks until the run is done: each chunk is one `astrosr train` process that saves a
# resumable checkpoint (model.pt + resume.pt, the fitted LR schedule included) and exits after
# run.chunk_minutes; the next one continues exactly with --resume.
#
#   scripts/train_chunks.sh CONFIG [OUT] [extra astrosr train arguments, e.g. --chunk-minutes 9]
#
# OUT defaults to runs/<config name>. PYTHON (default python3) runs `-m napari_astrosr`.
# Stops when a chunk ends with anything but "stopped (chunk)" (done, budget spent, Ctrl-C, an error).
set -u
if [ $# -lt 1 ]; then
  echo "usage: scripts/train_chunks.sh CONFIG [OUT] [astrosr train arguments]" >&2
  exit 2
fi
CONFIG=$1
shift
PY=${PYTHON:-python3}
if [ $# -ge 1 ] && [ "${1#-}" = "$1" ]; then
  OUT=$1
  shift
else
  OUT=runs/$("$PY" -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['name'])" "$CONFIG") || exit 2
fi
TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT
n=0
while :; do
  n=$((n + 1))
  RESUME=
  [ -f "$OUT/model.pt" ] && [ -f "$OUT/resume.pt" ] && RESUME=--resume
  echo "== chunk $n $RESUME ($(date -u +%H:%M:%S))"
  "$PY" -m napari_astrosr train "$CONFIG" --out "$OUT" $RESUME --quiet "$@" | tee "$TMP"
  rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || exit "$rc"
  grep -q "^stopped (chunk)" "$TMP" || break
done
echo "== $n chunk(s): $OUT"
