#!/usr/bin/env bash
# The main job on the bundled sample data, through real Prefect deployment runs:
# build-features/build-sample-features, then train/train-hanet (+ evaluation).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$VTR_REPO"
DEMO_EPOCHS="${DEMO_EPOCHS:-4}"

bash scripts/prefect_up.sh

source scripts/lib_deploy.sh   # run_deployment: output kept whole even when redirected to a file
run() { run_deployment "$@" || exit 1; }

run 'build-features/build-sample-features'
run 'train/train-hanet' --param run_name=demo --param "epochs=$DEMO_EPOCHS" --param batch_size=32
run 'build-index/build-index' --param checkpoint=runs/hanet/demo/best.pt

python scripts/demo_summary.py out/sample runs/hanet/demo/report.json
echo; echo "Prefect UI: http://127.0.0.1:$VTR_PREFECT_PORT  (stop it with: make prefect-down)"
echo; echo "=== vtr search 'a green triangle rises on a black background' (index: runs/hanet/demo/index; the web page: vtr serve)"
vtr search "a green triangle rises on a black background" --index runs/hanet/demo/index --top 5
