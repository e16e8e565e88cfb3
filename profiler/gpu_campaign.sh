#!/usr/bin/env bash
# Run the whole validation campaign on a GPU machine that may have no package index.
# Put wheels of what that machine lacks (pydantic, pydantic-core, annotated-types, typing-inspection,
# pyyaml if missing) in .whl/ first (see README, "Profiling on a GPU"). Results land in $OUT or ./out/gpu.
set -euo pipefail
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
OUT_DIR=${OUT:-out/gpu}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT_DIR.gpu.txt" || true
python3 -m profiler.campaign --out "$OUT_DIR" "$@"
