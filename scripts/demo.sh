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

python - <<'PY'
import json, pathlib
from flows.train import format_metrics
root = pathlib.Path("out/sample")
report = json.loads(pathlib.Path("runs/hanet/demo/report.json").read_text())
print("\n=== Shards:", root.resolve())
for p in sorted(root.rglob("*")):
    if p.is_file() and "_stages" not in p.parts and "shards" not in p.parts:
        print(f"  {p.relative_to(root)}  ({p.stat().st_size/1e6:.2f} MB)")
print("\nInspect them with pyarrow / h5py alone, e.g.:")
print("  python -c \"import pyarrow.parquet as pq; print(pq.read_table('out/sample/videos.parquet').to_pandas().head())\"")
print("  python -c \"import h5py; f=h5py.File('out/sample/features/resnet152/test.h5'); k=next(iter(f)); print(k, f[k].shape, dict(f.attrs))\"")
print("\n=== HANet on the sample test split (runs/hanet/demo/report.json)")
print(format_metrics(report))
print("heatmaps:", *report.get("heatmaps", []), sep="\n  ")
PY
echo; echo "Prefect UI: http://127.0.0.1:$VTR_PREFECT_PORT  (stop it with: make prefect-down)"
echo; echo "=== vtr search 'a green triangle rises on a black background' (index: runs/hanet/demo/index; the web page: vtr serve)"
vtr search "a green triangle rises on a black background" --index runs/hanet/demo/index --top 5
