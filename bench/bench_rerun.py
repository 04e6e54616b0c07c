"""Rerun of a finished build: `vtr build` twice on the same data, both as fresh processes.

    .venv/bin/python bench/bench_rerun.py [--n-videos 240] [--reruns 3] [--min-first-s 60] [--workdir DIR]

The first build (production geometry: 224 crops, I3D 8x8, both extractors, RANDOM weights: the
machine is offline; the speed is representative) and the reruns are each a `vtr build` process
against one temporary Prefect server started before (not timed), as a user with `make prefect-up`
runs them. Ratio = median rerun wall / first-build wall, both measured in this run. The target
(issue 11) holds for a first build of >= ``--min-first-s`` seconds; the bench says whether the
first build qualified. Also printed: where a rerun's time goes (imports of flows.build measured in
a fresh process; whether torch was imported, from ``-X importtime``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET = 0.05


def vtr_build(ann: Path, out: Path, env: dict, log: Path, importtime: bool = False) -> float:
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "flows.cli", "build",
           "--dataset", "bench", "--dataset-root", str(ann.parent / "videos"), "--annotation", str(ann),
           "--out-root", str(out), "--weights", "random", "--shard-size", "8"]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"vtr build failed (rc {rc}); log: {log}\n{log.read_text()[-2000:]}")
    return wall


def imported_modules(log: Path) -> set[str]:
    return {ln.rsplit("|", 1)[1].strip() for ln in log.read_text().splitlines() if ln.startswith("import time:")}


def import_seconds(env: dict) -> float:
    code = "import time; t = time.perf_counter(); import flows.build; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-videos", type=int, default=240)
    ap.add_argument("--reruns", type=int, default=3)
    ap.add_argument("--min-first-s", type=float, default=60.0)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from pipeline.datasets.sample_data import generate_sample_dataset

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_rerun-"))
    ann = generate_sample_dataset(work / "data", n_videos=args.n_videos, seed=0)
    load0 = os.getloadavg()
    with prefect_test_harness(server_startup_timeout=180):
        env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(ROOT),
               "VTR_CACHE_DIR": str(work / "cache")}
        first = vtr_build(ann, work / "out", env, work / "first.log")
        print(f"first build: {first:.1f} s (a fresh `vtr build` process)", flush=True)
        reruns = [vtr_build(ann, work / "out", env, work / f"rerun-{i}.log", importtime=(i == 0))
                  for i in range(args.reruns)]
        print(f"reruns: {', '.join(f'{r:.2f}' for r in reruns)} s", flush=True)
        cached = all("(0 stage runs executed" in (work / f"rerun-{i}.log").read_text() for i in range(args.reruns))
        torch_in_rerun = "torch" in imported_modules(work / "rerun-0.log")
        imports = import_seconds(env)
    med = statistics.median(reruns)
    ratio = med / first
    qualified = first >= args.min_first_s
    print(f"bench_rerun: {args.n_videos} sample videos, production geometry, both extractors, random weights, "
          f"shard_size 8; load average {load0[0]:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (shared machine)")
    print(f"[same run] rerun {med:.2f} s (median of {args.reruns}) / first build {first:.1f} s = {ratio:.1%}; "
          f"every stage cached: {cached}; torch imported by the rerun: {torch_in_rerun}; importing flows.build "
          f"in a fresh process {imports:.2f} s")
    print(f"TARGET rerun <= {TARGET:.0%} of a >= {args.min_first_s:.0f} s build: "
          f"{'MET' if ratio <= TARGET and qualified and cached else 'MISSED'}"
          f"{'' if qualified else f' (first build only {first:.0f} s: use more --n-videos)'}")
    report = {"first_s": round(first, 2), "reruns_s": [round(r, 2) for r in reruns], "median_rerun_s": round(med, 2),
              "ratio_same_run": ratio, "all_cached": cached, "torch_imported": torch_in_rerun,
              "import_flows_build_s": round(imports, 2), "n_videos": args.n_videos, "qualified": qualified,
              "load_avg": [load0[0], os.getloadavg()[0]]}
    print("RESULTS " + json.dumps(report))
    return report


if __name__ == "__main__":
    main()
