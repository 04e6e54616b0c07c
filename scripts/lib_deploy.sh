# Sourced by scripts/demo.sh (and tests/test_scripts.py): run a Prefect deployment and check it completed.
# The output goes to stdout ONCE (a `make demo > demo.log 2>&1` keeps every line) and to a temporary
# file that is checked afterwards. (`tee /dev/stderr` re-opened the redirected log file and truncated it.)

run_deployment() {  # run_deployment NAME [prefect deployment run options...]
  local name="$1"; shift
  echo; echo "=== prefect deployment run '$name' $*"
  local log rc=0
  log="$(mktemp "${TMPDIR:-/tmp}/vtr-deploy.XXXXXX")"
  prefect deployment run "$name" "$@" --watch 2>&1 | tee "$log" || rc=$?
  if [ "$rc" -ne 0 ] || ! grep -q "finished successfully in 'Completed'" "$log"; then
    echo "deployment run $name did not complete (exit $rc)" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}
