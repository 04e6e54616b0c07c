#!/usr/bin/env bash
# Stop the worker and server started by prefect_up.sh (their whole process groups).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
for name in worker server; do
  pidfile="$PREFECT_HOME/$name.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 1 10); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$pid" 2>/dev/null || true   # a worker ignores one SIGTERM
    echo "stopped $name ($pid)"
  fi
  rm -f "$pidfile"
done
