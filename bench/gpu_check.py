"""GPU check: the pipeline's GPU work on one CUDA device, in <= 8 minutes, as ONE command.

On the lent GPU machine (nothing can be installed there; see README "GPU check"):

    bash scripts/gpu_check_device.sh            # installs .gpu_bundle's wheels into a target folder, runs this

Here: ``make gpu-check`` (project venv) or ``make gpu-check GPU_CHECK_ARGS="--device cpu --tiny"``.

    python3 bench/gpu_check.py [--device cuda|cpu|auto] [--tiny] [--out FILE.json] [--skip STEP ...]

Steps (each timed, all printed, one JSON written with ``--out``):
1. ``roofline``: dense bf16, fp32 (TF32 off) and, on CUDA, TF32 matmul TFLOP/s measured in THIS run
   ("fp32" convolutions on CUDA run as TF32 by torch's default: compared with the TF32 roofline);
2. ``extract``: ResNet152 frames/s and I3D-R50 clips/s as extraction builds them (bf16 autocast / bf16
   frozen graph, and fp32), FLOPs per frame / clip counted by torch's FlopCounterMode, achieved TFLOP/s
   as % of the same-precision roofline;
3. ``path``: the production extraction path (pipeline.video.extract.extract_shards_multi: one decode per
   video for both models, prefetch threads, cross-video batches) on generated sample videos, shards in
   parallel processes sharing the device: frames/s and the GPU's busy share (NVML, sampled);
4. ``build``: the sample build through the Prefect build-features flow with ``device=<device>``;
   needs Prefect: skipped with a one-line note where Prefect is not installed (the GPU machine);
5. ``train``: HANet training steps (default model size) on planted shards, fp32 and bf16;
6. ``eval``: evaluate_model at MSR-VTT test scale (2,990 videos x 20 captions), fp32 and bf16 text;
7. ``agree``: ResNet152 features on the CPU and the device, fp32 / strict fp32 / bf16, against a float64
   reference (relative errors).

Steps 1-3 and 5-7 import only pipeline/, models/ and storage/ (bench/gpu_steps.py), never Prefect.
Nothing here invents numbers: every figure printed was measured in this run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

import gpu_steps as steps_mod  # noqa: E402

BUDGET_S = 480  # the check must finish in 8 minutes on one GPU
STEPS = ("roofline", "extract", "path", "build", "train", "eval", "agree")
SIZES = {  # full (GPU) / tiny (CPU test) scales
    "full": dict(tiny=False, matmul_n=8192, matmul_reps=20, frames=64, clips=16, clip_len=8, batches=20, crop=224,
                 videos=48, video_size=320, video_frames=96, frame_stride=4, workers=4, sample_videos=40,
                 train_videos=400, train_steps=30, batch=64, eval_videos=2990, eval_captions=20, agree_frames=8),
    "tiny": dict(tiny=True, matmul_n=512, matmul_reps=5, frames=2, clips=1, clip_len=4, batches=1, crop=64,
                 videos=4, video_size=64, video_frames=16, frame_stride=2, workers=2, sample_videos=4,
                 train_videos=24, train_steps=2, batch=8, eval_videos=12, eval_captions=2, agree_frames=2),
}


def matmul_roofline(device: torch.device, n: int, reps: int) -> dict:
    """Dense square matmul throughput (TFLOP/s): bf16, fp32 with TF32 disabled, and (CUDA) TF32."""
    out = {}
    tf32 = torch.backends.cuda.matmul.allow_tf32
    kinds = [("bf16", torch.bfloat16, False), ("fp32", torch.float32, False)]
    if device.type == "cuda":
        kinds.append(("tf32", torch.float32, True))
    try:
        for name, dtype, allow_tf32 in kinds:
            torch.backends.cuda.matmul.allow_tf32 = allow_tf32
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            s = steps_mod.timed(lambda: a @ b, device, reps)
            out[name] = {"n": n, "seconds": s, "tflops": 2 * n ** 3 / s / 1e12}
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return out


def sample_build(device: torch.device, sizes: dict, work: Path, harness: bool) -> dict:
    """The sample dataset through the build-features flow with device=<device> (needs Prefect)."""
    try:
        import prefect  # noqa: F401
    except ImportError:
        return {"skipped": "Prefect is not installed here (the GPU image lacks it): the flow step is skipped"}
    from flows.build import build_features
    from storage.features import read_attrs

    overrides = {"decode": {"short_side": 128, "crop": 112},
                 "i3d": {"clip_len": 8, "clip_step": 2, "max_clips": 2, "short_side": 128, "crop": 112}}
    if sizes["tiny"]:
        overrides = {"decode": {"crop": 64, "short_side": 72},
                     "i3d": {"clip_len": 4, "clip_step": 2, "max_clips": 1, "crop": 64, "short_side": 72},
                     "concepts": {"n_verbs": 8, "n_nouns": 12}}
    data = work / "sample"

    def run() -> dict:
        return build_features(dataset="sample-gpu", dataset_root=str(data / "videos"),
                              annotation=str(data / "annotation.json"), out_root=str(work / "out"),
                              generate_sample=sizes["sample_videos"], max_frames=8, frame_stride=4, batch_size=32,
                              shard_size=max(2, sizes["sample_videos"] // 2), device=str(device), weights="random",
                              allow_random_weights=True, overrides=overrides)
    t0 = time.perf_counter()
    summary = _with_harness(harness, run)
    seconds = time.perf_counter() - t0
    prov = json.loads(read_attrs(Path(summary["root"]) / "features/resnet152/train.h5")["provenance"])
    return {"seconds": seconds, "executed": summary["executed"], "cached": summary["cached"],
            "resnet152_device": prov.get("device"), "resnet152_precision": prov.get("precision")}


def _print_step(name: str, result: dict) -> None:
    print(f"\n== {name}", flush=True)
    print(json.dumps(result, indent=2, default=str), flush=True)


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="cuda | cuda:N | cpu | auto (cuda when present)")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (tests; CPU machines)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here (after every step)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--skip", nargs="*", default=[], choices=STEPS, help="steps to skip")
    ap.add_argument("--harness", action=argparse.BooleanOptionalAction, default=True,
                    help="start a temporary Prefect server for the build step (off: use PREFECT_API_URL)")
    return ap.parse_args(argv)


def _header(device: torch.device, tiny: bool) -> dict:
    import numpy
    return {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "numpy": numpy.__version__, "tiny": tiny, "cpu_count": os.cpu_count(),
            "cpu_threads": torch.get_num_threads(), "load_avg": os.getloadavg(), "steps": {}, "failed": []}


def _steps(device: torch.device, sizes: dict, work: Path, results: dict, harness: bool) -> list:
    m = steps_mod
    return [("roofline", lambda: matmul_roofline(device, sizes["matmul_n"], sizes["matmul_reps"])),
            ("extract", lambda: m.backbone_throughput(device, sizes, results["steps"]["roofline"])),
            ("path", lambda: m.extract_path(device, sizes, work / "path")),
            ("build", lambda: sample_build(device, sizes, work / "build", harness)),
            ("train", lambda: m.train_steps(device, sizes, work / "train")),
            ("eval", lambda: m.full_eval(device, sizes, work / "eval")),
            ("agree", lambda: m.feature_agreement(device, sizes))]


def _run_step(name: str, fn, results: dict) -> None:
    """One step; a failure is recorded and printed, and the others still run (one GPU lease, one try)."""
    t0 = time.perf_counter()
    try:
        res = fn()
    except Exception as exc:  # noqa: BLE001 - reported, counted, and the exit status says so
        traceback.print_exc()
        res = {"error": f"{type(exc).__name__}: {exc}"}
        results["failed"].append(name)
    results["steps"][name] = {**res, "step_s": round(time.perf_counter() - t0, 2)}
    _print_step(name, results["steps"][name])


def _save(results: dict, out: Path | None) -> None:
    if out:  # atomic: a check killed at its limit leaves the last complete JSON
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2, default=str))
        os.replace(tmp, out)


def _fmt(x, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def summary_lines(results: dict) -> list[str]:
    """The short table printed last (the device tool returns the end of the output)."""
    st, lines = results["steps"], []
    for ext, unit in (("resnet152", "frames"), ("i3d_r50", "clips")):
        e = st.get("extract", {}).get(ext)
        if e:
            lines += [f"{ext} {k}: {e[k]['units_per_s']:.1f} {unit}/s, {e[k]['tflops']:.2f} TFLOP/s = "
                      f"{e[k]['pct_of_roofline']:.1f} % of the {e[k]['roofline_kind']} roofline ({e[k]['precision_used']})"
                      for k in ("bf16", "fp32")]
    if "decoded_frames_per_s" in st.get("path", {}):
        p = st["path"]
        lines.append(f"path: {p['videos']} videos in {p['processes']} processes, {p['wall_s']:.1f} s, "
                     f"{p['decoded_frames_per_s']:.0f} decoded frames/s, GPU busy {_fmt(p.get('gpu_busy_pct'))} %")
    if "fp32" in st.get("train", {}):
        t = st["train"]
        lines.append(f"train: {t['fp32']['s_per_step_incl_val']:.3f} s/step fp32, "
                     f"{t['bf16']['s_per_step_incl_val']:.3f} s/step bf16 (batch {t['batch']}, validation included)")
    if "fp32" in st.get("eval", {}):
        e = st["eval"]
        lines.append(f"eval {e['videos']} x {e['captions']}: {e['fp32']['seconds']:.1f} s fp32, "
                     f"{e['text_bf16']['seconds']:.1f} s bf16 text")
    if "device_fp32_vs_ref" in st.get("agree", {}):
        a = st["agree"]
        lines.append(f"agree vs float64: cpu fp32 {a['cpu_fp32_vs_ref']['rel_l2']:.1e}, device "
                     f"{a['device_fp32_kind']} {a['device_fp32_vs_ref']['rel_l2']:.1e}, strict fp32 "
                     f"{a['device_strict_fp32_vs_ref']['rel_l2']:.1e}, bf16 {a['device_bf16_vs_ref']['rel_l2']:.1e}")
    lines += [f"{k}: {v['skipped']}" for k, v in st.items() if "skipped" in v]
    lines += [f"{k}: FAILED {st[k]['error']}" for k in results["failed"]]
    return lines


def main(argv: list[str] | None = None) -> dict:
    args = _args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: --device cuda but no CUDA device is visible (use --device cpu)")
    sizes = SIZES["tiny" if args.tiny else "full"]
    warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
    results = _header(device, args.tiny)
    print(f"gpu_check on {results['device']} ({results['device_name']}), python {results['python']}, torch "
          f"{torch.__version__}, CUDA {torch.version.cuda}, tiny={args.tiny}, load {results['load_avg']}", flush=True)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vtr-gpu-check-") as tmp:
        work = Path(args.workdir or tmp)
        for name, fn in _steps(device, sizes, work, results, args.harness):
            if name in args.skip or (name == "extract" and "roofline" in args.skip):
                continue
            _run_step(name, fn, results)
            _save(results, args.out)
    results["total_s"] = round(time.perf_counter() - t_all, 1)
    results["within_budget"] = results["total_s"] <= BUDGET_S
    _save(results, args.out)
    print("\n== summary\n" + "\n".join(summary_lines(results)))
    print(f"gpu_check done in {results['total_s']} s (budget {BUDGET_S} s: "
          f"{'met' if results['within_budget'] else 'NOT met'}); failed steps: {results['failed'] or 'none'}",
          flush=True)
    return results


def _with_harness(enabled: bool, fn):
    if not enabled:
        return fn()
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        return fn()


if __name__ == "__main__":
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    sys.exit(1 if main()["failed"] else 0)
