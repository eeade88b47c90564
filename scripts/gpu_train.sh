#!/usr/bin/env bash
# The GPU recipe: FISR x2, FISR x4 and Restormer x1 trained at once on one GPU, each within a wall-time budget
# (run.time_budget_minutes: the LR schedule is fitted to the steps that fit), then evaluated on the held-out fields
# (benchmarks/quality.py with the fresh checkpoints), all within GPU_TRAIN_LIMIT s (530) of an H200; results in $OUT.
#
# Prepare here first (carried as ignored folders, see docs/training.md "Training on a GPU"):
#   python scripts/gpu_prepare.py configs/*_gpu.yaml      # .gpudata/: data the configs read + held-out fields + stamps
#   (wheels of the packages the GPU image lacks in .whl/, see the comment at --download-wheels below)
# On the GPU machine (repository root):  OUT=/some/dir bash scripts/gpu_train.sh
# Check end to end on a CPU in under 3 minutes (tiny configs, no wheels, ../shared/data when .gpudata is absent):
#   PYTHON=.venv/bin/python OUT=/tmp/out bash scripts/gpu_train.sh --dry-run      (or GPU_TRAIN_TINY=1)
#
# Steps: install carried wheels -> nvidia-smi -> benchmarks/train_speed.py --profile (<= ~60 s, table to
# $OUT/train_speed.md; skipped in a dry run) -> the configs trained concurrently (scripts/gpu_train.py: --time-budget-minutes each,
# SIGINT = clean stop at the deadline) -> weights (no optimizer state), logs, curves and configs packed into
# $OUT/runs*.tar.gz (< 15 MiB each) -> benchmarks/quality.py on the new checkpoints ($OUT/quality.md).
#
# --download-wheels (run here, with network): fetch the wheels listed in WHEELS into .whl/.
set -u
WHEELS="astropy==8.0.2 pyerfa==2.0.1.5 astropy-iers-data==0.2026.11.16.0.37.44 pydantic==2.14.4 \
pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 sep==1.4.1"
if [ "${1:-}" = "--download-wheels" ]; then
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl $WHEELS
  exit $?
fi
if [ "${1:-}" = "--dry-run" ]; then
  GPU_TRAIN_TINY=1
  GPU_TRAIN_SKIP_WHEELS=1
fi

T0=$(date +%s)
TINY_MODE=${GPU_TRAIN_TINY:-0}
if [ "$TINY_MODE" = 1 ]; then LIMIT=${GPU_TRAIN_LIMIT:-175}; else LIMIT=${GPU_TRAIN_LIMIT:-530}; fi
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_train_log.txt") 2>&1
PY=${PYTHON:-python3}
if [ "${GPU_TRAIN_SKIP_WHEELS:-0}" != 1 ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
# the carried data when present, else the shared data folder (a dry run here)
if [ -d .gpudata/data ]; then DATA_DIR=$PWD/.gpudata/data; else DATA_DIR=${ASTROSR_SHARED_DATA:-$PWD/../shared/data}; fi
export ASTROSR_SHARED_DATA=$DATA_DIR
[ -f .gpudata/stamps.npz ] && export ASTROSR_STAMP_BANK=$PWD/.gpudata/stamps.npz
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg OMP_NUM_THREADS=2
echo "== $(date -u) $(hostname) limit ${LIMIT}s data $ASTROSR_SHARED_DATA"
nvidia-smi || echo "(no nvidia-smi: CPU run)"
"$PY" -c "import torch, numpy, astropy, sep, pydantic; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'astropy', astropy.__version__)" \
  || { echo "imports failed"; exit 1; }

CONFIGS=${GPU_TRAIN_CONFIGS:-"configs/fisr_x2_gpu.yaml configs/fisr_x4_gpu.yaml configs/restormer_x1_gpu.yaml"}
RUNS=${GPU_TRAIN_RUNS:-/tmp/astrosr_runs_$T0}
if [ "$TINY_MODE" = 1 ]; then
  SPEED_ARGS="--configs configs/fisr_x4_gpu.yaml --steps 1 --warmup 1 --batch 4 --profile"  # 24-px LR patches: quick inverses
  TINY=--tiny
  SPEED_LIMIT=0  # skipped: on a shared 2-core CPU it needs minutes (run benchmarks/train_speed.py alone)
  EVAL_METHODS="fisr,fisr + flux-exact"
  EVAL_FIELDS="--max-fields 1"
  EVAL_S=${GPU_TRAIN_EVAL_S:-40}
  PACK_S=10
else
  SPEED_ARGS="--configs configs/fisr_x2_gpu.yaml configs/fisr_x4_gpu.yaml configs/restormer_x1_gpu.yaml --steps 15 --warmup 5 --profile"
  TINY=
  SPEED_LIMIT=60
  EVAL_METHODS="fisr,fisr + flux-exact,fisr (default),richardson-lucy,backprojection"
  EVAL_FIELDS=
  EVAL_S=${GPU_TRAIN_EVAL_S:-80}
  PACK_S=25
fi
if [ "$SPEED_LIMIT" -gt 0 ]; then
  echo "== train_speed ($(($(date +%s) - T0)) s)"
  timeout -s INT -k 10 $SPEED_LIMIT "$PY" benchmarks/train_speed.py $SPEED_ARGS --out "$OUT/train_speed.md" \
    || echo "(train_speed ended early: rows measured so far are in train_speed.md)"
else
  echo "== train_speed skipped (dry run): python benchmarks/train_speed.py $SPEED_ARGS --device cpu"
fi

NOW=$(($(date +%s) - T0))
DEADLINE=$((LIMIT - NOW - EVAL_S - PACK_S))  # every run over (SIGINT at the deadline, kill 45 s later at worst)
BUILD_S=${GPU_TRAIN_BUILD_S:-$([ "$TINY_MODE" = 1 ] && echo 20 || echo 100)}
MINUTES=$("$PY" -c "print(round(max(0.1, ($DEADLINE - $BUILD_S - 20) / 60), 2))")
echo "== training ($NOW s): deadline ${DEADLINE}s, time budget ${MINUTES} min each"
"$PY" scripts/gpu_train.py $CONFIGS $TINY --runs "$RUNS" --minutes "$MINUTES" --deadline "$DEADLINE" \
  --pack "$OUT" --max-files 6

NOW=$(($(date +%s) - T0))
echo "== evaluation ($NOW s): benchmarks/quality.py on the new checkpoints"
MODELS=()
[ -f "$RUNS/fisr_x2_gpu/model.pt" ] && MODELS+=(--model "fisr:2=$RUNS/fisr_x2_gpu/model.pt")
[ -f "$RUNS/fisr_x4_gpu/model.pt" ] && MODELS+=(--model "fisr:4=$RUNS/fisr_x4_gpu/model.pt")
SCALES=$( [ -f "$RUNS/fisr_x4_gpu/model.pt" ] && echo 2,4 || echo 2 )
LEFT=$((LIMIT - NOW - 5))
if [ ${#MODELS[@]} -gt 0 ] && [ $LEFT -gt 10 ]; then
  timeout -s INT -k 5 $LEFT "$PY" benchmarks/quality.py --quick $EVAL_FIELDS --methods "$EVAL_METHODS" --scales "$SCALES" --no-pix2wgan "${MODELS[@]}" \
    --out "$OUT/quality.md" > "$OUT/quality_stdout.txt" 2>&1 || echo "(evaluation failed or ran out of time: see quality_stdout.txt)"
  grep -c "^| " "$OUT/quality.md" 2>/dev/null | sed 's/^/quality.md table rows: /' || echo "quality.md: none"
else
  echo "(no evaluation: no FISR checkpoint or no time left, ${LEFT}s)"
fi
echo "== done in $(($(date +%s) - T0)) s"
ls -la "$OUT"
