#!/usr/bin/env bash
# Train every *_gpu config at once on one GPU machine, within ~8 minutes, and put the results in $OUT.
#
# Prepare here first (carried as ignored folders, see docs/training.md "Training on a GPU"):
#   python scripts/gpu_prepare.py configs/*_gpu.yaml      # .gpudata/: data files the configs read + stamp bank
#   (wheels of the packages the GPU image lacks in .whl/, see the comment at --download-wheels below)
# On the GPU machine (repository root):  OUT=/some/dir bash scripts/gpu_train.sh
# Check end to end on a CPU (same steps, tiny configs):
#   GPU_TRAIN_TINY=1 GPU_TRAIN_SKIP_WHEELS=1 PYTHON=.venv/bin/python OUT=/tmp/out bash scripts/gpu_train.sh
#
# Steps: install carried wheels -> nvidia-smi -> benchmarks/train_speed.py (<= ~75 s, table to
# $OUT/train_speed.md) -> all configs trained concurrently (scripts/gpu_train.py: each with a wall-time
# budget, SIGINT = clean stop at the deadline) -> weights (no optimizer state), logs, curves and configs
# packed into $OUT/runs*.tar.gz (< 15 MiB each). The whole script ends within GPU_TRAIN_LIMIT s (510).
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

T0=$(date +%s)
LIMIT=${GPU_TRAIN_LIMIT:-510}
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
export ASTROSR_SHARED_DATA=$PWD/.gpudata/data ASTROSR_STAMP_BANK=$PWD/.gpudata/stamps.npz
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg OMP_NUM_THREADS=2
echo "== $(date -u) $(hostname) limit ${LIMIT}s"
nvidia-smi || echo "(no nvidia-smi: CPU run)"
"$PY" -c "import torch, numpy, astropy, sep, pydantic; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'astropy', astropy.__version__)" \
  || { echo "imports failed"; exit 1; }

CONFIGS=${GPU_TRAIN_CONFIGS:-"configs/fisr_x2_gpu.yaml configs/fisr_x4_gpu.yaml configs/restormer_x1_gpu.yaml configs/restormer_x2_gpu.yaml \
configs/restormer_x4_gpu.yaml configs/pix2wgan_gpu.yaml configs/pix2wgan_cascade_gpu.yaml"}
if [ "${GPU_TRAIN_TINY:-0}" = 1 ]; then
  SPEED_ARGS="--configs configs/fisr_x2_gpu.yaml configs/restormer_x1_gpu.yaml --steps 3 --warmup 1 --batch 4"
  TINY=--tiny
  SPEED_LIMIT=150
else
  SPEED_ARGS="--steps 20 --warmup 5"
  TINY=
  SPEED_LIMIT=75
fi
echo "== train_speed ($(($(date +%s) - T0)) s)"
timeout -s INT -k 10 $SPEED_LIMIT "$PY" benchmarks/train_speed.py $SPEED_ARGS --out "$OUT/train_speed.md" \
  || echo "(train_speed ended early: rows measured so far are in train_speed.md)"

NOW=$(($(date +%s) - T0))
DEADLINE=$((LIMIT - NOW - 75))         # every run over (SIGINT, then kill 45 s later) before packing
MINUTES=$("$PY" -c "print(round(max(0.5, ($DEADLINE - ${GPU_TRAIN_BUILD_S:-150}) / 60), 2))")
echo "== training ($NOW s): deadline ${DEADLINE}s, ${MINUTES} min of training each"
"$PY" scripts/gpu_train.py $CONFIGS $TINY --runs "${GPU_TRAIN_RUNS:-/tmp/astrosr_runs_$T0}" --minutes "$MINUTES" --deadline "$DEADLINE" \
  --pack "$OUT" --max-files 6
echo "== done in $(($(date +%s) - T0)) s"
ls -la "$OUT"
