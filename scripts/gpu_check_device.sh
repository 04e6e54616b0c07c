#!/usr/bin/env bash
# The GPU check as ONE command on the lent GPU machine (nothing can be fetched there):
#   device tool `run`: command "bash scripts/gpu_check_device.sh", carry [".gpu_bundle"], timeout_s 600
# after `make gpu-bundle` here. Installs the carried wheels (requirements/gpu-bundle.txt) into a
# target folder with no index and no resolver, puts it on PYTHONPATH, and runs bench/gpu_check.py
# with the image's python3; log + JSON go to $OUT (the tool brings them back), else bench/results/.
# Extra arguments go to gpu_check.py (the dry run here: --device cpu --tiny, with a venv's python3
# first on PATH; see README "GPU check").
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
OUT="${OUT:-bench/results}"
SITE="${VTR_GPU_SITE:-$(mktemp -d /tmp/vtr-gpu-site.XXXXXX)}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
export PYTHONUNBUFFERED=1 DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
{
  echo "gpu_check_device: $(date -u +%FT%TZ) $(uname -srm); load: $(cut -d' ' -f1-3 /proc/loadavg); cores: $(nproc)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem \
    --format=csv,noheader
  t0=$(date +%s)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --disable-pip-version-check \
    --target "$SITE" --find-links .gpu_bundle -r requirements/gpu-bundle.txt || exit 3
  echo "gpu_check_device: $(ls "$SITE" | wc -l) entries installed into $SITE in $(( $(date +%s) - t0 )) s"
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  "$PY" bench/gpu_check.py --out "$OUT/gpu_check.json" "$@"
} 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
