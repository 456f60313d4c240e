#!/usr/bin/env bash
# Everything a session lent a GPU should measure, in one call (well under 8 minutes on an H200).
#
#   bash benchmarks/gpu_check.sh          # on the GPU machine (through the `device` tool)
#   bash benchmarks/gpu_check.sh --dry    # here, on CPU, tiny sizes: checks the script end to end
#
# The GPU machine is bare: it has torch but none of geoseg's other packages. Before the call,
# fetch them as wheels into .whl/ (ignored by git) with `bash benchmarks/gpu_wheels.sh`, and name
# `.whl` in the call's `carry`; this script installs them into /tmp/site first.
#
# Prints Markdown tables (copy them into benchmarks/RESULTS.md with the machine line); full logs
# go to $OUT (the device tool brings that folder back) or /tmp/gpu_check.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
[[ "${1:-}" == "--dry" || "${GPU_CHECK_DRY:-0}" == "1" ]] && DRY=1
LOGS="${OUT:-/tmp/gpu_check}"
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1 DO_NOT_TRACK=1

if [[ $DRY == 0 ]] && compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi
PY="${PYTHON:-python3}"
[[ -x .venv/bin/python && $DRY == 1 ]] && PY=.venv/bin/python

if [[ $DRY == 1 ]]; then
    DEVICE=cpu; SIZES="512"; MEMORY="512 1024"; TILE=256; BATCH=4
    echo "# dry run on CPU (tiny sizes): checks the script, not the figures"
else
    DEVICE=cuda; SIZES="4096 8192"; MEMORY="4096 8192"; TILE=1024; BATCH=8
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$LOGS/gpu.txt"
fi
"$PY" -c "import torch, geoseg; print('# torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'geoseg', geoseg.__version__)"

# 1. The engine's GPU path: pipeline vs the model-only limit on the scene's pixels, with
#    predict's default tiling (picked per scene from the 512-px model tile) and with large
#    tiles (cheaper per pixel on a GPU), both with the model's 64-px overlap.
for tile in auto "$TILE"; do
    memory=$MEMORY; [[ $tile != auto ]] && memory=""   # peak memory once, at the default
    tiling=(); [[ $tile != auto ]] && tiling=(--tile "$tile" --overlap 64)
    "$PY" benchmarks/bench_predict.py --device "$DEVICE" --sizes $SIZES --memory-sizes $memory \
        ${tiling[@]+"${tiling[@]}"} --batch-size "$BATCH" --arch unet --encoder resnet34 \
        --vector-format none \
        2>&1 | tee "$LOGS/bench_predict_${DEVICE}_${tile}.md"
done

# 2. Tests that need a GPU (marked `gpu`; skipped without one).
"$PY" -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tail -5 | tee "$LOGS/pytest_gpu.txt" || true
echo "# logs in $LOGS"
