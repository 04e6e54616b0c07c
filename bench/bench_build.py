"""End-to-end sample build with both extractors, before and after issue 11's decode work, same run.

    .venv/bin/python bench/bench_build.py [--n-videos 24] [--rounds 2] [--geometry tiny|production]
        [--size 256] [--n-frames 240] [--workdir DIR]

Three variants of the real ``build-features`` flow (in process, local thread runner, a temporary
Prefect server), each into a fresh output root, on the same generated sample videos, interleaved
round by round in ONE process (same-run ratios):

* ``before``: the flow as it was: one extraction task per (extractor, shard), each decoding the
  videos again (this bench splits ``flows.build.extraction_groups``' per-shard tasks, see
  :func:`_per_extractor`), and I3D converting EVERY decoded frame (the old
  clip request, ``FrameRequest(every=1)``, recreated here by replacing ``sampling.clips_request``);
* ``per-extractor``: the same separate decodes, with today's sparse I3D conversion (ablation);
* ``after``: today's flow: one task per shard, ONE decode per video for both extractors, I3D
  converting only its clip grid's frames (pipeline/video/_frames.py).

Weights are RANDOM (offline machine): the features are meaningless, the speed is representative.
End to end = the whole flow (ingest, extraction, merges, text stages). Flow heartbeats are off in
this bench: Prefect joins a flow's heartbeat thread at exit, which sleeps in 1 s steps, so every
wall would land on whole seconds (a constant <= 1 s per build that this bench does not measure).

Default workload: 20 s videos (240 frames, 256x256) with tests/_flowutil.py's small crops (64 px):
decoding dominates and the models are cheap, the regime of a GPU build, where the backbones are
fast and decode is the bottleneck. ``--geometry production`` (224 crops) on a 2-core CPU is the
opposite regime: the models dominate and decoding once saves little.
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
from pipeline.video.sampling import clips_request as SPARSE_CLIPS_REQUEST  # noqa: E402

TARGET_RATIO = 1.3
TINY = {"decode": {"crop": 64, "short_side": 72},  # tests/_flowutil.py's geometry
        "i3d": {"clip_len": 4, "clip_step": 2, "max_clips": 1, "crop": 64, "short_side": 72}}


VARIANTS = {"before": (False, True), "per-extractor": (False, False), "after": (True, False)}  # (once, dense)


def _dense_clips_request(cfg):
    """The clip request before issue 11: keep (convert) every decoded frame."""
    from pipeline.video.decode import FrameRequest

    return FrameRequest(short_side=cfg.short_side, crop=cfg.crop, every=1)


def _per_extractor(groups_fn):
    """``flows.build.extraction_groups`` as it was before issue 11: one extraction task per
    (extractor, shard), each decoding the shard's videos again; all of one extractor's shards first,
    as the old flow submitted them. Outputs, manifests and cache keys are the same as one task per shard."""
    def split(*args, **kwargs) -> list[dict]:
        out = [{"spec": g["spec"], "plans": [p], "models": {p["stage"]: g["models"][p["stage"]]},
                "device": {p["stage"]: g["device"][p["stage"]]}} for g in groups_fn(*args, **kwargs) for p in g["plans"]]
        order = list(dict.fromkeys(g["plans"][0]["stage"] for g in out))
        return sorted(out, key=lambda g: order.index(g["plans"][0]["stage"]))  # stable: shards stay in order
    return split


def one_build(flows_build, variant: str, ann: Path, out: Path, overrides: dict) -> dict:
    from pipeline.video import sampling

    once, dense = VARIANTS[variant]
    one_task_per_shard = flows_build.extraction_groups
    if not once:  # the benchmark's own switch: the product flow always decodes once per shard
        flows_build.extraction_groups = _per_extractor(one_task_per_shard)
    sampling.clips_request = _dense_clips_request if dense else SPARSE_CLIPS_REQUEST
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        summary = flows_build.build_features(
            dataset="bench", dataset_root=str(ann.parent / "videos"), annotation=str(ann), out_root=str(out),
            weights="random", shard_size=4, overrides=overrides)
    finally:
        flows_build.extraction_groups, sampling.clips_request = one_task_per_shard, SPARSE_CLIPS_REQUEST
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 2), "executed": summary["executed"]}


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


def summarize(args, runs: dict, dec: dict, load0) -> dict:
    """Print the same-run ratios (before / after is the target's) and return the RESULTS dict."""
    med = {k: statistics.median(x["wall_s"] for x in v) for k, v in runs.items()}
    cpu = {k: statistics.median(x["cpu_s"] for x in v) for k, v in runs.items()}
    ratio = med["before"] / med["after"]
    per_round = [a["wall_s"] / b["wall_s"] for a, b in zip(runs["before"], runs["after"])]
    print(f"bench_build: {args.n_videos} sample videos ({args.size}x{args.size}, {args.n_frames} frames), shard_size 4, "
          f"geometry {args.geometry}, both extractors, {args.rounds} rounds interleaved, flow heartbeats off; "
          f"load average {load0[0]:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (shared machine)")
    print("median end-to-end wall: " + ", ".join(f"{k} {v:.2f} s" for k, v in med.items()))
    print(f"[same run] before / after end to end: {ratio:.2f}x (per round {', '.join(f'{x:.2f}x' for x in per_round)}); "
          f"TARGET >= {TARGET_RATIO}x: {'MET' if ratio >= TARGET_RATIO else 'MISSED'}")
    print(f"[same run] of which sparse I3D conversion (before / per-extractor) {med['before'] / med['per-extractor']:.2f}x, "
          f"one decode for both (per-extractor / after) {med['per-extractor'] / med['after']:.2f}x")
    print(f"[same run, process CPU time] before {cpu['before']:.2f} s / after {cpu['after']:.2f} s = "
          f"{cpu['before'] / cpu['after']:.2f}x")
    print(f"[same run] one decode pass, s/video: ResNet frames only {dec['frames']}, I3D clip frames only "
          f"{dec['clips']}, both {dec['both']} (every frame is decoded; I3D converts only its clip grid's frames)")
    return {"runs": runs, "median_cpu_s": cpu, "decode_s_per_video": dec, "median_wall_s": med, "ratio_same_run": ratio,
            "ratio_sparse": med["before"] / med["per-extractor"], "ratio_decode_once": med["per-extractor"] / med["after"],
            "geometry": args.geometry, "n_videos": args.n_videos, "size": args.size, "n_frames": args.n_frames,
            "load_avg": [load0[0], os.getloadavg()[0]]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-videos", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--size", type=int, default=256, help="video side in pixels (sample_data)")
    ap.add_argument("--n-frames", type=int, default=240, help="frames per video (20 s at 12 fps)")
    ap.add_argument("--geometry", choices=("tiny", "production"), default="tiny")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from flows import build as flows_build
    from pipeline.datasets.sample_data import generate_sample_dataset

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_build-"))
    ann = generate_sample_dataset(work / "data", n_videos=args.n_videos, seed=0, size=args.size,
                                  n_frames=args.n_frames)
    overrides = TINY if args.geometry == "tiny" else {}
    load0 = os.getloadavg()
    runs = {v: [] for v in VARIANTS}
    with prefect_test_harness(server_startup_timeout=180), \
            temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        one_build(flows_build, "after", ann, work / "warm", overrides)  # warm-up: imports, model code, spaCy
        for r in range(args.rounds):
            for name in VARIANTS:
                res = one_build(flows_build, name, ann, work / f"{name}-{r}", overrides)
                runs[name].append(res)
                print(f"round {r}: {name}: {res}", flush=True)
    report = summarize(args, runs, decode_breakdown(ann, overrides), load0)
    print("RESULTS " + json.dumps(report))
    return report


if __name__ == "__main__":
    main()
