"""The demo's closing summary: where the shards are, how to open them, the metrics table.

Usage: python scripts/demo_summary.py [SHARDS_ROOT] [REPORT_JSON]
(tests/test_scripts.py runs it on a real report, so the demo cannot drift from the code.)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from models.metrics import format_metrics


def summary(root: Path, report_path: Path) -> str:
    report = json.loads(report_path.read_text())
    lines = [f"\n=== Shards: {root.resolve()}"]
    for p in sorted(root.rglob("*")):
        if p.is_file() and "_stages" not in p.parts and "shards" not in p.parts:
            lines.append(f"  {p.relative_to(root)}  ({p.stat().st_size / 1e6:.2f} MB)")
    lines += ["\nInspect them with pyarrow / h5py alone, e.g.:",
              f"  python -c \"import pyarrow.parquet as pq; print(pq.read_table('{root}/videos.parquet').to_pandas().head())\"",
              f"  python -c \"import h5py; f=h5py.File('{root}/features/resnet152/test.h5'); k=next(iter(f)); "
              "print(k, f[k].shape, dict(f.attrs))\"",
              f"\n=== {report.get('model', 'hanet')} on the {report.get('split', 'test')} split ({report_path})",
              format_metrics(report["metrics"], table=True)]
    if report.get("heatmaps"):
        lines.append("heatmaps:\n  " + "\n  ".join(report["heatmaps"]))
    return "\n".join(lines)


if __name__ == "__main__":
    args = sys.argv[1:] + ["out/sample", "runs/hanet/demo/report.json"][len(sys.argv[1:]):]
    print(summary(Path(args[0]), Path(args[1])))
