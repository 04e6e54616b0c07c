"""The video path at scale (issue 21, item 4): 1,000+ sample videos through decode + ResNet152 + I3D.

    .venv/bin/python bench/bench_video_scale.py [--sizes 250,500,1000] [--calib 8,24] [--workdir DIR]
        [--geometry sample|tiny] [--sample-s 0.5]

What runs is the real ``build-features`` flow (flows/build.py), as users run it: the parameters of a
deployment in prefect.yaml (``build-sample-features`` for the scale runs: 128x128 sample videos decoded at
128/112, ResNet152 8 frames, I3D 2 clips of 8, shard_size 40), weights=random (offline), local thread
runner, against ONE temporary Prefect server (prefect_test_harness) that this process starts. Videos
come from the project's generator (pipeline.datasets.sample_data: real MPEG-4 files decoded with PyAV).

Each size N runs in its OWN child process (fresh interpreter, so peak RSS is that build's own), on a
freshly generated set of N videos and a fresh output root. Per size: wall and CPU time of the flow call,
s/video, the MARGINAL s/video between consecutive sizes (the fixed cost cancels), peak RSS (ru_maxrss),
RSS sampled every ``--sample-s`` with the shards committed so far (RSS at 25/50/75/100 % of the videos,
and the in-run marginal s/video between those points), shards written (files on disk), Prefect task
runs of the flow run (read back through the Prefect client), failed videos (the status tables), frames
per video (the stage manifests). Generation of the videos is not timed.

Extrapolation to MSR-VTT (10,000 videos) on this CPU: two more child builds (``--calib`` sizes) at
MSR-VTT-like geometry with the ``build-msrvtt-features`` deployment's parameters (ResNet152 20 frames at
224, I3D 8 clips of 8x8 at 224; shard_size 8, so two shard tasks run at once as in a large build) on
generated videos of MSR-VTT's mean length and pixel count (see CALIB); their marginal s/video x 10,000,
labelled as an extrapolation. No GPU figure: this
script measures the CPU only (the GPU path is ``make gpu-check``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MSRVTT_VIDEOS = 10_000
# MSR-VTT (Xu et al. 2016): 10,000 clips, 41.2 h in all (mean ~14.8 s), mostly 320x240 (76,800 px).
# Calibration videos: 15 s at an assumed 30 fps = 450 frames, 276x276 = 76,176 px (the generator draws squares).
CALIB = {"size": 276, "n_frames": 450, "fps": 30}
TINY = {"decode": {"crop": 64, "short_side": 72},  # tests/_flowutil.py's geometry, for the fast test
        "i3d": {"clip_len": 4, "clip_step": 2, "max_clips": 1, "crop": 64, "short_side": 72}}
FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def deployment_params(name: str) -> dict:
    """The parameters of a prefect.yaml deployment, minus the ones naming data or weights (set here)."""
    import yaml

    deps = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    params = dict(next(d for d in deps if d["name"] == name)["parameters"])
    for k in ("dataset", "dataset_root", "annotation", "out_root", "generate_sample", "weights"):
        params.pop(k, None)
    return params


def geometry_params(geometry: str) -> dict:
    """Flow parameters of a scale run: 'sample' = the build-sample-features deployment; 'tiny' = the
    same with the test suite's small frames and clips (seconds per build, for tests)."""
    params = deployment_params("build-sample-features")
    if geometry == "tiny":
        params.update(overrides=TINY, max_frames=4, frame_stride=4, batch_size=8)
    return params


def calib_params() -> dict:
    """build-msrvtt-features' parameters with shards of 8 videos (its 256 would make a calibration build one
    shard task; at 10,000 videos two shard tasks run at once, as here with the local runner's 2 workers)."""
    return {**deployment_params("build-msrvtt-features"), "shard_size": 8}


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(ln.split()[1]) / 1024 for ln in fh if ln.startswith("VmRSS:"))


class Sampler:
    """Every ``interval`` s: (t, RSS MB, shards with every extractor's manifest committed, 1-min load)."""

    def __init__(self, root: Path, extractors: list[str], interval: float):
        self.root, self.extractors, self.interval = root, extractors, interval
        self.samples: list[tuple[float, float, int, float]] = []
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def done_shards(self) -> int:
        sets = [{p.stem for p in (self.root / "_stages" / e).glob("shard-*.json")} for e in self.extractors]
        return len(set.intersection(*sets)) if sets else 0

    def sample(self) -> None:
        self.samples.append((round(time.perf_counter() - self._t0, 3), round(rss_mb(), 1), self.done_shards(),
                             os.getloadavg()[0]))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self._t0 = time.perf_counter()
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


def _paged(read, **kw) -> list:
    out, offset = [], 0
    while True:
        page = read(limit=200, offset=offset, **kw)
        out += page
        if len(page) < 200:
            return out
        offset += len(page)


def prefect_runs(flow_run_id) -> dict:
    """Task runs Prefect recorded for a build-features flow run and its build-dag subflow run(s)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterId, FlowRunFilterParentTaskRunId)

    def tasks_of(c, ids):
        return _paged(c.read_task_runs, flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(ids))))

    with get_client(sync_client=True) as c:
        top = tasks_of(c, [flow_run_id])
        subs = _paged(c.read_flow_runs, flow_run_filter=FlowRunFilter(
            parent_task_run_id=FlowRunFilterParentTaskRunId(any_=[t.id for t in top])))
        stage = tasks_of(c, [s.id for s in subs]) if subs else []
    return {"flow_runs": 1 + len(subs), "task_runs": len(top) + len(stage), "stage_task_runs": len(stage),
            "stage_task_names": sorted(t.name for t in stage),
            "task_states": dict(Counter(t.state_name for t in top + stage))}


def _at_fractions(samples, sizes: list[int], n: int) -> list[dict]:
    """RSS, time and load when 25/50/75/100 % of the videos were in committed shards."""
    done_videos = [sum(sizes[:k]) for k in range(len(sizes) + 1)]
    out = []
    for f in FRACTIONS:
        hit = next((s for s in samples if done_videos[min(s[2], len(sizes))] >= f * n), samples[-1])
        out.append({"fraction": f, "videos": done_videos[min(hit[2], len(sizes))], "t_s": hit[0],
                    "rss_mb": hit[1], "load_1m": round(hit[3], 2)})
    for a, b in zip(out, out[1:]):
        dv = b["videos"] - a["videos"]
        b["marginal_s_per_video"] = round((b["t_s"] - a["t_s"]) / dv, 4) if dv else None
    return out


def _manifest_counts(rows: list[dict], extractors: list[str]) -> dict:
    """Per extractor: units (frames / clips) and decoded frames per ok video, from the stage manifests."""
    out = {}
    for e in extractors:
        rs = [r for r in rows if r["stage"] == e]
        ok = sum(int(r["ok"] or 0) for r in rs)
        decoded = sum(json.loads(r["other"] or "{}").get("decoded_frames", 0) for r in rs)
        out[e] = {"ok": ok, "error": sum(int(r["error"] or 0) for r in rs),
                  "units_per_video": round(sum(int(r["frames"] or 0) for r in rs) / max(ok, 1), 2),
                  "decoded_frames_per_video": round(decoded / max(ok, 1), 1),
                  "task_seconds": round(sum(r["seconds"] for r in rs), 2)}
    return out


def measure_build(ann: Path, out: Path, params: dict, sample_s: float = 0.5, dataset: str = "scale") -> dict:
    """One build-features flow call (this process; needs a Prefect API), measured. See the module doc."""
    from flows.build import build_features
    from pipeline.build_report import failure_summary
    from pipeline.config import BuildConfig

    extractors = list(params.get("extractors", ["resnet152", "i3d_r50"]))
    root = out / dataset
    n = len(json.loads(ann.read_text())["videos"])
    rss0, t0, c0 = rss_mb(), time.perf_counter(), time.process_time()
    with Sampler(root, extractors, sample_s) as sampler:
        state = build_features(dataset=dataset, dataset_root=str(ann.parent / "videos"), annotation=str(ann),
                               out_root=str(out), weights="random", return_state=True, **params)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    summary = state.result()
    import torch

    shard_size = int(params.get("shard_size", 64))
    sizes = [min(shard_size, n - i) for i in range(0, n, shard_size)]
    shard_files = {e: len(list((root / "features" / e / "shards").glob("shard-*.h5"))) for e in extractors}
    cfg = BuildConfig.model_validate_json((root / "build_config.json").read_text())
    n_videos, n_failed, kinds = failure_summary(root, cfg)
    return {"videos": n, "wall_s": round(wall, 3), "cpu_s": round(cpu, 2), "s_per_video": round(wall / n, 4),
            "cpu_s_per_video": round(cpu / n, 4), "rss_start_mb": round(rss0, 1),
            "peak_rss_mb": max(round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                               max(s[1] for s in sampler.samples)),  # hiwater lags VmRSS by a few pages
            "planned_shards": len(sizes), "shard_files": shard_files,
            "shards_committed": sampler.samples[-1][2], "status_videos": n_videos, "failed_videos": n_failed,
            "failure_kinds": kinds, "per_extractor": _manifest_counts(summary["stages"], extractors),
            "stage_rows": len(summary["stages"]), "executed": summary["executed"],
            "prefect": prefect_runs(state.state_details.flow_run_id), "torch_threads": torch.get_num_threads(),
            "at_fractions": _at_fractions(sampler.samples, sizes, n), "rss_samples": len(sampler.samples),
            "rss_max_sampled_mb": max(s[1] for s in sampler.samples),
            "load_max_1m": round(max(s[3] for s in sampler.samples), 2)}


def child_main(args) -> None:
    warnings.filterwarnings("ignore")
    params = json.loads(args.params)
    res = measure_build(Path(args.ann), Path(args.out), params, args.sample_s)
    print("CHILD " + json.dumps(res), flush=True)


def run_child(ann: Path, out: Path, params: dict, sample_s: float) -> dict:
    """measure_build in a fresh interpreter against this process's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, __file__, "--child", "--ann", str(ann), "--out", str(out), "--params", json.dumps(params),
           "--sample-s", str(sample_s)]
    load0 = os.getloadavg()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("CHILD ")), None)
    if p.returncode or line is None:
        raise RuntimeError(f"child build failed (rc {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return {**json.loads(line[6:]), "load_1m_before_after": [round(load0[0], 2), round(os.getloadavg()[0], 2)]}


def scale_run(work: Path, sizes: list[int], params: dict, sample_s: float, gen: dict | None = None,
              tag: str = "scale") -> list[dict]:
    """One child build per size, each on its own freshly generated videos; printed as it goes."""
    from pipeline.datasets.sample_data import generate_sample_dataset

    results = []
    for n in sizes:
        t0 = time.perf_counter()
        ann = generate_sample_dataset(work / f"{tag}-{n}" / "data", n_videos=n, seed=0, **(gen or {}))
        gen_s = time.perf_counter() - t0
        res = {**run_child(ann, work / f"{tag}-{n}" / "out", params, sample_s), "generate_s": round(gen_s, 1)}
        if results:
            prev = results[-1]
            res["marginal_s_per_video"] = round((res["wall_s"] - prev["wall_s"]) / (n - prev["videos"]), 4)
            res["marginal_cpu_s_per_video"] = round((res["cpu_s"] - prev["cpu_s"]) / (n - prev["videos"]), 4)
        results.append(res)
        print(f"[{tag}] {one_line(res)}", flush=True)
        print(f"[{tag}] N={n} " + json.dumps(res), flush=True)  # whole, as it goes: a later size may not finish
    return results


def one_line(r: dict) -> str:
    pe = r["per_extractor"]
    return (f"N={r['videos']}: wall {r['wall_s']:.1f} s, cpu {r['cpu_s']:.1f} s, {r['s_per_video']:.3f} s/video, "
            f"marginal {r.get('marginal_s_per_video', '-')} s/video, peak RSS {r['peak_rss_mb']:.0f} MB, shards "
            f"{r['shard_files']}, RSS at 25/50/75/100 % of the videos "
            f"{'/'.join(str(round(a['rss_mb'])) for a in r['at_fractions'])} MB, task runs {r['prefect']['task_runs']} ({r['prefect']['stage_task_runs']} stage tasks), "
            f"failed {r['failed_videos']}, per video: " + ", ".join(
                f"{e} {v['units_per_video']} units of {v['decoded_frames_per_video']} decoded frames"
                for e, v in pe.items()) + f"; load {r['load_1m_before_after']}, max {r['load_max_1m']}")


def table(results: list[dict]) -> list[str]:
    head = (f"{'N':>6} {'wall s':>8} {'cpu s':>8} {'s/video':>8} {'marginal':>9} {'peak RSS MB':>11} "
            f"{'RSS@25/50/75/100% MB':>24} {'shards':>7} {'task runs':>9} {'failed':>6}")
    lines = [head]
    for r in results:
        rss = "/".join(f"{a['rss_mb']:.0f}" for a in r["at_fractions"])
        shards = "/".join(str(v) for v in r["shard_files"].values())
        lines.append(f"{r['videos']:>6} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} {r['s_per_video']:>8.3f} "
                     f"{str(r.get('marginal_s_per_video', '-')):>9} {r['peak_rss_mb']:>11.0f} {rss:>24} "
                     f"{shards:>7} {r['prefect']['task_runs']:>9} {r['failed_videos']:>6}")
    return lines


def calib_decode(ann: Path) -> dict[str, float]:
    """s/video of one decode pass over calibration videos at the production geometry (bench_build's
    decode_breakdown: ResNet frames only, I3D clip frames only, both): the decode share of a video's cost."""
    from bench.bench_build import decode_breakdown

    return decode_breakdown(ann, {}, n=6)


def extrapolate(scale: list[dict], calib: list[dict], decode: dict | None = None) -> list[str]:
    """MSR-VTT on this CPU: the calibration builds' marginal s/video x 10,000 (+ their fixed cost)."""
    c0, c1 = calib[0], calib[-1]
    marg = c1["marginal_s_per_video"]
    marg_cpu = c1["marginal_cpu_s_per_video"]
    fixed = c0["wall_s"] - marg * c0["videos"]
    total = fixed + marg * MSRVTT_VIDEOS
    margs = ", then ".join(str(r["marginal_s_per_video"]) for r in scale if "marginal_s_per_video" in r) or "-"
    pe = c1["per_extractor"]
    dec = (decode or {}).get("both")
    share = f"{dec / marg:.0%}" if dec and marg > 0 else "?"
    units = ", ".join(f"{e} {v['units_per_video']} units/video of {v['decoded_frames_per_video']} decoded frames"
                      for e, v in pe.items())
    return [
        f"EXTRAPOLATION (not measured): MSR-VTT, {MSRVTT_VIDEOS:,} videos, this CPU, weights random (same compute "
        f"as pretrained), build-msrvtt-features parameters:",
        f"  calibration builds at N={c0['videos']} and {c1['videos']} of generated {CALIB['size']}x{CALIB['size']} "
        f"videos, {CALIB['n_frames']} frames at {CALIB['fps']} fps ({units}):",
        (f"  marginal {marg:.3f} s/video wall ({marg_cpu:.3f} s CPU), fixed {fixed:.1f} s -> "
         f"{total:.0f} s = {total / 3600:.1f} h for {MSRVTT_VIDEOS:,} videos; peak RSS at this geometry " if marg > 0 else
         f"  NO wall extrapolation: the wall marginal {marg:.3f} s/video is not positive (noise; rerun on a quiet "
         f"machine); CPU marginal {marg_cpu:.3f} s/video -> {marg_cpu * MSRVTT_VIDEOS / 3600:.1f} CPU-hours; peak RSS "
         "at this geometry ") +
        f"{c1['peak_rss_mb']:.0f} MB (its growth in N: the scale runs' RSS columns).",
        f"  one decode pass for both extractors over these videos (same process, outside the flow): "
        f"{dec} s/video = {share} of the marginal wall per video.",
        f"  assumptions: per-video cost stays linear in N (scale runs' marginal s/video {margs}); real "
        "MSR-VTT clips are 10-30 s (mean ~14.8 s): ResNet's 20-frame cap (stride 16) is reached from 320 frames on, "
        "so shorter clips cost less and longer ones the same in the models; decode grows with every frame and pixel, "
        "and real 320x240 H.264 content decodes slower per frame than these MPEG-4 shapes (not measured here).",
        "  the build's text chain scales with captions, not videos (MSR-VTT: 20 per video, the samples 5): its "
        "cost at 200,000 captions is bench_fullsize's parse stage, not this figure.",
        "  GPU: not measured (no device lent to this task; bench/results holds no GPU figure, only a CPU dry run "
        "of gpu_check).",
    ]


def environment() -> list[str]:
    import torch
    import torchvision

    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    return [f"date {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; uptime: {up}",
            f"machine: {os.cpu_count()} CPUs ({cpu}), python {platform.python_version()}, torch {torch.__version__}, "
            f"torchvision {torchvision.__version__}, parent torch threads {torch.get_num_threads()}, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, niceness {os.nice(0)}"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="250,500,1000")
    ap.add_argument("--calib", default="8,24", help="calibration sizes at MSR-VTT geometry ('' = none)")
    ap.add_argument("--geometry", choices=("sample", "tiny"), default="sample")
    ap.add_argument("--sample-s", type=float, default=0.5)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--ann"), ap.add_argument("--out"), ap.add_argument("--params")
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args)
    warnings.filterwarnings("ignore")
    from prefect.testing.utilities import prefect_test_harness

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_video_scale-"))
    sizes = [int(x) for x in args.sizes.split(",")]
    calib_sizes = [int(x) for x in args.calib.split(",") if x]
    for line in environment():
        print(line, flush=True)
    with prefect_test_harness(server_startup_timeout=180):
        scale = scale_run(work, sizes, geometry_params(args.geometry), args.sample_s)
        calib = scale_run(work, calib_sizes, calib_params(), args.sample_s, gen=CALIB, tag="calib") if calib_sizes else []
    decode = calib_decode(work / f"calib-{calib_sizes[-1]}" / "data" / "annotation.json") if calib_sizes else {}
    report = {"scale": scale, "calib": calib, "calib_decode_s_per_video": decode, "geometry": args.geometry}
    print(f"\nbench_video_scale: build-features flow, geometry {args.geometry} (build-sample-features deployment), "
          "each N in its own child process, one temporary Prefect server")
    print("\n".join(table(scale)))
    if calib:
        print("calibration (build-msrvtt-features parameters):")
        print("\n".join(table(calib)))
        print("\n".join(extrapolate(scale, calib, decode)))
    for line in environment():
        print(line)
    print("RESULTS " + json.dumps(report))
    return report


if __name__ == "__main__":
    main()
