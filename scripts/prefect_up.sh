#!/usr/bin/env bash
# Start (idempotently) a local Prefect server (SQLite, 127.0.0.1 only), a process
# work pool, the project's deployments and one worker. Logs/pids in $PREFECT_HOME.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$VTR_REPO"
mkdir -p "$PREFECT_HOME"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
healthy() { python - <<'PY' 2>/dev/null
import os, urllib.request, sys
try:
    urllib.request.urlopen(os.environ["PREFECT_API_URL"] + "/health", timeout=2)
except Exception:
    sys.exit(1)
PY
}

if ! healthy; then
  echo "starting Prefect server on 127.0.0.1:$VTR_PREFECT_PORT (log: $PREFECT_HOME/server.log)"
  # setsid: its own process group, so prefect_down.sh can stop it and its children
  setsid nohup prefect server start --host 127.0.0.1 --port "$VTR_PREFECT_PORT" \
    >"$PREFECT_HOME/server.log" 2>&1 < /dev/null &
  echo $! >"$PREFECT_HOME/server.pid"
  for _ in $(seq 1 120); do healthy && break; sleep 1; done
  healthy || { echo "Prefect server did not come up; see $PREFECT_HOME/server.log" >&2; tail -20 "$PREFECT_HOME/server.log" >&2; exit 1; }
fi
echo "Prefect server: $PREFECT_API_URL (UI: http://127.0.0.1:$VTR_PREFECT_PORT)"

prefect work-pool inspect "$VTR_WORK_POOL" >/dev/null 2>&1 \
  || prefect work-pool create "$VTR_WORK_POOL" --type process >/dev/null
echo "work pool: $VTR_WORK_POOL"

prefect --no-prompt deploy --all >"$PREFECT_HOME/deploy.log" 2>&1 \
  || { echo "prefect deploy failed:" >&2; tail -30 "$PREFECT_HOME/deploy.log" >&2; exit 1; }
prefect deployment ls 2>/dev/null | grep -E "build-features|train|evaluate|retrain|compare|build-index|export" | sed 's/^/  /' || true

if ! alive "$PREFECT_HOME/worker.pid"; then
  echo "starting worker on pool $VTR_WORK_POOL (log: $PREFECT_HOME/worker.log)"
  setsid nohup prefect worker start --pool "$VTR_WORK_POOL" --name "vtr-local-worker" \
    >"$PREFECT_HOME/worker.log" 2>&1 < /dev/null &
  echo $! >"$PREFECT_HOME/worker.pid"
fi
echo "worker running (pid $(cat "$PREFECT_HOME/worker.pid"))"
