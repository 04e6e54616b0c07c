"""End-to-end sample build with both extractors: one decode per video (one task per shard) vs one
extraction task per (extractor, shard) that each decode the videos again (the old flow).

    .venv/bin/python bench/bench_build.py [--n-videos 12] [--rounds 2] [--geometry tiny|production]
        [--size 256] [--n-frames 240] [--workdir DIR]

Both variants are the real ``build-features`` flow (in process, local thread runner, a temporary
Prefect server), into a fresh output root each time, on the same generated sample videos, run
interleaved (old, new, old, new, ...) in ONE process: the ratio is a same-run ratio. The old path is
``flows.build.DECODE_ONCE = False`` (same tasks, one extractor each). Weights are RANDOM (offline
machine): the features are meaningless, the speed is representative. End to end = the whole flow
(ingest, extraction, merges, text stages).

Default workload: 20 s videos (240 frames, 256x256) with tests/_flowutil.py's small crops (64 px):
decoding the whole stream dominates and the models are cheap, the regime of a GPU build, where
the backbones are fast and decode is the bottleneck. ``--geometry production`` (224 crops) on a
2-core CPU is the opposite regime: the models dominate and one decode saves little.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_RATIO = 1.3
TINY = {"decode": {"crop": 64, "short_side": 72},  # tests/_flowutil.py's geometry
        "i3d": {"clip_len": 4, "clip_step": 2, "max_clips": 1, "crop": 64, "short_side": 72}}


def one_build(flows_build, decode_once: bool, ann: Path, out: Path, overrides: dict) -> dict:
    flows_build.DECODE_ONCE = decode_once
    t0, c0 = time.perf_counter(), time.process_time()
    summary = flows_build.build_features(
        dataset="bench", dataset_root=str(ann.parent / "videos"), annotation=str(ann), out_root=str(out),
        weights="random", shard_size=4, overrides=overrides)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "executed": summary["executed"]}


def decode_breakdown(ann: Path, overrides: dict, n: int = 6) -> dict[str, float]:
    """Seconds per video of ONE decode pass (pipeline.video.sampling.decode_products) keeping ResNet's
    frames only, I3D's clip frames only, or both: what a shared decode can save at most."""
    from pipeline.config import DecodeConfig, I3DConfig
    from pipeline.video.sampling import decode_products

    d = DecodeConfig().model_copy(update=overrides.get("decode", {}))
    i = I3DConfig(weights="random").model_copy(update=overrides.get("i3d", {}))
    videos = sorted((ann.parent / "videos").iterdir())[:n]
    out = {}
    for name, frames, i3d in (("frames", True, None), ("clips", False, i), ("both", True, i)):
        t0 = time.perf_counter()
        for v in videos:
            decode_products(v, d, frames, i3d)
        out[name] = round((time.perf_counter() - t0) / len(videos), 4)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-videos", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--size", type=int, default=256, help="video side in pixels (sample_data)")
    ap.add_argument("--n-frames", type=int, default=240, help="frames per video (20 s at 12 fps)")
    ap.add_argument("--geometry", choices=("tiny", "production"), default="tiny")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from prefect.testing.utilities import prefect_test_harness

    from flows import build as flows_build
    from pipeline.datasets.sample_data import generate_sample_dataset

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_build-"))
    ann = generate_sample_dataset(work / "data", n_videos=args.n_videos, seed=0, size=args.size,
                                  n_frames=args.n_frames)
    overrides = TINY if args.geometry == "tiny" else {}
    load0 = os.getloadavg()
    runs = {"per-extractor": [], "decode-once": []}
    with prefect_test_harness(server_startup_timeout=180):
        one_build(flows_build, True, ann, work / "warm", overrides)  # warm-up: imports, model code, spaCy
        for r in range(args.rounds):
            for name, once in (("per-extractor", False), ("decode-once", True)):
                res = one_build(flows_build, once, ann, work / f"{name}-{r}", overrides)
                runs[name].append(res)
                print(f"round {r}: {name}: {res}", flush=True)
    flows_build.DECODE_ONCE = True
    med = {k: statistics.median(x["wall_s"] for x in v) for k, v in runs.items()}
    ratio = med["per-extractor"] / med["decode-once"]
    cpu = {k: statistics.median(x["cpu_s"] for x in v) for k, v in runs.items()}
    per_round = [a["wall_s"] / b["wall_s"] for a, b in zip(runs["per-extractor"], runs["decode-once"])]
    print(f"bench_build: {args.n_videos} sample videos ({args.size}x{args.size}, {args.n_frames} frames), shard_size 4, geometry {args.geometry}, both extractors, "
          f"{args.rounds} rounds interleaved; torch threads {os.environ.get('VTR_NUM_THREADS', 'default')}; "
          f"load average {load0[0]:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (shared machine)")
    print(f"median end-to-end wall: per-extractor tasks {med['per-extractor']:.2f} s, decode-once {med['decode-once']:.2f} s")
    print(f"[same run] per-extractor / decode-once end to end: {ratio:.2f}x (per round "
          f"{', '.join(f'{x:.2f}x' for x in per_round)}); TARGET >= {TARGET_RATIO}x: "
          f"{'MET' if ratio >= TARGET_RATIO else 'MISSED'}")
    dec = decode_breakdown(ann, overrides)
    print(f"[same run] one decode pass, s/video: ResNet frames only {dec['frames']}, I3D clip frames only "
          f"{dec['clips']}, both {dec['both']} -> shared decode saves at most "
          f"{(dec['frames'] + dec['clips']) / dec['both']:.2f}x of the decode work (every frame is decoded; "
          f"I3D converts only its clip grid's frames, ResNet one in frame_stride)")
    print(f"[same run, process CPU time] per-extractor {cpu['per-extractor']:.2f} s / decode-once "
          f"{cpu['decode-once']:.2f} s = {cpu['per-extractor'] / cpu['decode-once']:.2f}x")
    report = {"runs": runs, "median_cpu_s": cpu, "decode_s_per_video": dec, "median_wall_s": med, "ratio_same_run": ratio, "geometry": args.geometry,
              "n_videos": args.n_videos, "size": args.size, "n_frames": args.n_frames, "load_avg": [load0[0], os.getloadavg()[0]]}
    print("RESULTS " + json.dumps(report))
    return report


if __name__ == "__main__":
    main()
