#!/usr/bin/env bash
# One chunk of the GPU validation campaign on a lent machine (README, "The GPU campaign on a lent machine").
#   bash profiler/gpu_campaign.sh [--budget-s 420] [--quick] ...   (arguments go to python -m trsim.profiler.campaign)
# Installs the carried wheels and trsim (profiler/device_setup.sh), then profiles the cases still missing from
# validate/data/<gpu>/partial and packs results, summary and log into $OUT. The exit code is the campaign's:
# non-zero when set-up failed, or any case, FLOPs count or step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT_DIR=${OUT:-out/gpu}
mkdir -p "$OUT_DIR"
. profiler/device_setup.sh || exit 3
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader || true
${PYTHON:-python3} -m trsim.profiler.campaign --pack-to "$OUT_DIR" "$@"
