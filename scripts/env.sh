# Sourced by the scripts and the Makefile: one place for the local environment.
VTR_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export VTR_REPO
export PREFECT_HOME="${PREFECT_HOME:-$VTR_REPO/.prefect}"
export VTR_PREFECT_PORT="${VTR_PREFECT_PORT:-4200}"
export PREFECT_API_URL="${PREFECT_API_URL:-http://127.0.0.1:$VTR_PREFECT_PORT/api}"
export PREFECT_RESULTS_LOCAL_STORAGE_PATH="${PREFECT_RESULTS_LOCAL_STORAGE_PATH:-$PREFECT_HOME/results}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
# `prefect deployment run ... --watch` streams the run's log lines only when the server publishes them
export PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED="${PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED:-true}"
export PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED="${PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED:-true}"
export PREFECT_WORKER_QUERY_SECONDS="${PREFECT_WORKER_QUERY_SECONDS:-2}"
export PREFECT_LOGGING_LEVEL="${PREFECT_LOGGING_LEVEL:-INFO}"
export DO_NOT_TRACK=1
export NLTK_DATA="${NLTK_DATA:-$VTR_REPO/.nltk_data}"
export VTR_WORK_POOL="${VTR_WORK_POOL:-vtr-local}"
export PATH="$VTR_REPO/.venv/bin:$PATH"
export PREFECT_LOGGING_EXTRA_LOGGERS="${PREFECT_LOGGING_EXTRA_LOGGERS:-pipeline}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # torch shares cores with decode threads
