"""GPU check (`make gpu-check`): the pipeline on one CUDA device, in <= 8 minutes.

    .venv/bin/python bench/gpu_check.py [--device cuda|cpu|auto] [--tiny] [--out FILE.json]

Steps (each timed, all printed, one JSON written with ``--out``):
1. matmul roofline: dense bf16, fp32 (TF32 off) and, on CUDA, TF32 matmul TFLOP/s measured
   in THIS run ("fp32" convolutions on CUDA run as TF32 by torch's default, so they are
   compared with the TF32 roofline);
2. ResNet152 extraction on the device, bf16 autocast and fp32: frames/s of the backbone on
   synthetic 224x224 frames (the model's FLOPs per frame counted by torch's FlopCounterMode),
   achieved TFLOP/s printed as % of the same-precision matmul roofline; and the production
   path (pipeline.video.extract.extract_shard: decode + prefetch + batching) on sample videos;
3. the sample build through the build-features flow with ``device=<device>`` (Prefect
   ephemeral test server; random weights, offline);
4. small-scale HANet training (40 steps of batch 64 on 400 planted videos, validation
   included) and evaluation of its checkpoint, on the device;
5. CPU-vs-device feature agreement: the same seeded ResNet152, fp32, on the same frames
   (max relative difference; bf16-vs-fp32 on the device as well).

On a machine without a GPU, ``--device cpu`` runs every step on the CPU (``--tiny`` shrinks
every size: tests/test_gpu_check.py runs it). Nothing here invents numbers: every figure
printed was measured in this run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

BUDGET_S = 480  # the check must finish in 8 minutes on one GPU
SIZES = {  # full (GPU) / tiny (CPU test) scales
    "full": dict(matmul_n=8192, matmul_reps=20, frames=64, batches=12, crop=224, videos=24, sample_videos=40,
                 train_videos=400, train_steps=40, batch=64, agree_frames=8, path_frames=20),
    "tiny": dict(matmul_n=256, matmul_reps=3, frames=2, batches=2, crop=64, videos=2, sample_videos=4,
                 train_videos=24, train_steps=2, batch=8, agree_frames=2, path_frames=4),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, reps: int) -> float:
    fn()  # warm-up (kernel selection, cuDNN autotune)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / reps


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
            s = _timed(lambda: a @ b, device, reps)
            out[name] = {"n": n, "seconds": s, "tflops": 2 * n ** 3 / s / 1e12}
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return out


def _fp32_kind(device: torch.device) -> str:
    """What an 'fp32' convolution really runs as: cuDNN uses TF32 unless told not to (torch default)."""
    return "tf32" if device.type == "cuda" and torch.backends.cudnn.allow_tf32 else "fp32"


def resnet_flops_per_frame(crop: int) -> float:
    """FLOPs (2 x multiply-adds) of ResNet152's forward on one crop x crop frame, counted by torch."""
    import torchvision
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = torchvision.models.resnet152()
        x = torch.empty(1, 3, crop, crop)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return float(counter.get_total_flops())


def backbone_throughput(device: torch.device, sizes: dict, roofline: dict) -> dict:
    """ResNet152 (as extraction runs it: BN folded, channels_last) frames/s, bf16 autocast and fp32."""
    from pipeline.video.backbones import get_backbone
    from pipeline.config import ResNetConfig

    crop, frames = sizes["crop"], sizes["frames"]
    flops = resnet_flops_per_frame(crop)
    batch = np.random.default_rng(0).integers(0, 256, (frames, crop, crop, 3), dtype=np.uint8)
    out = {"flops_per_frame": flops, "batch": frames, "crop": crop}
    for name, bf16 in (("bf16", True), ("fp32", False)):
        # get_backbone: the same cached model the extraction path and the build below use
        bb = get_backbone("resnet152", ResNetConfig(weights="random", device=str(device), bf16=bf16))
        s = _timed(lambda: bb.embed(batch), device, sizes["batches"])  # embed returns to host: synced
        fps = frames / s
        kind = "bf16" if bb.bf16 else _fp32_kind(device)
        achieved = fps * flops / 1e12
        out[name] = {"precision_used": bb.provenance["precision"], "frames_per_s": fps, "tflops": achieved,
                     "pct_of_roofline": 100 * achieved / roofline[kind]["tflops"], "roofline_kind": kind}
    return out


def extract_path(device: torch.device, sizes: dict, work: Path) -> dict:
    """The production extraction path (decode + prefetch + cross-video batches) on sample videos."""
    from pipeline.config import BuildConfig, DecodeConfig, IngestConfig, ResNetConfig
    from pipeline.video.extract import extract_shard, plan_shards
    from pipeline.datasets.ingest import run_ingest
    from pipeline.datasets.sample_data import generate_sample_dataset

    ann = generate_sample_dataset(work / "data", n_videos=sizes["videos"], seed=0)
    cfg = BuildConfig(dataset="gpu", out_root=str(work / "out"),
                      ingest=IngestConfig(dataset_root=str(work / "data/videos"), annotation=str(ann)))
    run_ingest(cfg)
    root = work / "out" / "gpu"
    spec = plan_shards(root, 10 ** 9)[0]
    crop = sizes["crop"]
    decode = DecodeConfig(max_frames=sizes["path_frames"], frame_stride=2, crop=crop, short_side=max(crop, 256 * crop // 224))
    out = {}
    for name, bf16 in (("bf16", True), ("fp32", False)):
        mcfg = ResNetConfig(weights="random", device=str(device), bf16=bf16, batch_size=64)
        t0 = time.perf_counter()
        res = extract_shard(root, spec, "resnet152", decode, mcfg)
        s = time.perf_counter() - t0
        out[name] = {"videos": sizes["videos"], "frames": res.counts["frames"], "seconds": s,
                     "frames_per_s": res.counts["frames"] / s, "load_s": res.timings_s.get("load")}
    return out


def sample_build(device: torch.device, sizes: dict, work: Path) -> dict:
    """The sample dataset through the build-features flow with device=<device>."""
    from flows.build import build_features

    data = work / "sample"
    tiny = sizes is SIZES["tiny"]
    overrides = {"decode": {"short_side": 128, "crop": 112},
                 "i3d": {"clip_len": 8, "clip_step": 2, "max_clips": 2, "short_side": 128, "crop": 112}}
    if tiny:
        overrides = {"decode": {"crop": 64, "short_side": 72},
                     "i3d": {"clip_len": 4, "clip_step": 2, "max_clips": 1, "crop": 64, "short_side": 72},
                     "concepts": {"n_verbs": 8, "n_nouns": 12}}
    t0 = time.perf_counter()
    summary = build_features(dataset="sample-gpu", dataset_root=str(data / "videos"),
                             annotation=str(data / "annotation.json"), out_root=str(work / "out"),
                             generate_sample=sizes["sample_videos"], max_frames=8, frame_stride=4, batch_size=32,
                             shard_size=max(2, sizes["sample_videos"] // 2), device=str(device), weights="random",
                             allow_random_weights=True, overrides=overrides)
    seconds = time.perf_counter() - t0
    from storage.features import read_attrs

    prov = json.loads(read_attrs(Path(summary["root"]) / "features/resnet152/train.h5")["provenance"])
    return {"seconds": seconds, "executed": summary["executed"], "cached": summary["cached"],
            "root": summary["root"], "resnet152_device": prov["device"], "resnet152_precision": prov["precision"]}


def train_eval(device: torch.device, sizes: dict, work: Path) -> dict:
    """HANet: a few training steps and one evaluation on planted shards, on the device."""
    from models.config import EvalConfig, HANetConfig, TrainConfig
    from pipeline.learn.evaluate import run_evaluate
    from pipeline.datasets.planted import make_planted_shards
    from pipeline.learn.train import run_train

    tiny = sizes is SIZES["tiny"]
    root = work / "planted"
    make_planted_shards(root, n_videos=sizes["train_videos"], captions_per_video=5,
                        n_verbs=8 if tiny else 512, n_nouns=12 if tiny else 1024,
                        feat_dim=64 if tiny else 2048, n_frames=8 if tiny else 30, seed=0,
                        word_dim=32 if tiny else 300)
    hanet = (HANetConfig(feat_dim=64, word_dim=32, n_verb_concepts=8, n_noun_concepts=12, joint_dim=32, max_frames=8)
             if tiny else HANetConfig(feat_dim=2048, word_dim=300, max_frames=30))
    cfg = TrainConfig(hanet=hanet, epochs=1, batch_size=sizes["batch"], max_steps_per_epoch=sizes["train_steps"],
                      device=str(device), log_every=10 ** 6)
    t0 = time.perf_counter()
    summary = run_train(root, work / "run", cfg, resume=False)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = run_evaluate(Path(summary["best_checkpoint"]), root, EvalConfig(device=str(device), n_heatmaps=0),
                          work / "eval")
    eval_s = time.perf_counter() - t0
    return {"train_steps": sizes["train_steps"], "batch": sizes["batch"], "train_s_incl_val": train_s,
            "s_per_step_incl_val": train_s / sizes["train_steps"], "eval_s": eval_s, "rsum": report.get("rsum")}


def feature_agreement(device: torch.device, sizes: dict) -> dict:
    """The same seeded ResNet152 (fp32, unfused) on the same frames: CPU vs ``device``; bf16 vs fp32."""
    from pipeline.video.backbones import get_backbone as load_backbone  # cached per config
    from pipeline.config import ResNetConfig

    crop = sizes["crop"]
    frames = np.random.default_rng(1).integers(0, 256, (sizes["agree_frames"], crop, crop, 3), dtype=np.uint8)
    base = ResNetConfig(weights="random", bf16=False, fuse_bn=False, device="cpu")
    cpu = load_backbone("resnet152", base).embed(frames)
    dev32_bb = load_backbone("resnet152", base.model_copy(update={"device": str(device)}))
    dev32 = dev32_bb.embed(frames)  # cuDNN default: TF32 convolutions on CUDA
    tf32 = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = False
        dev32_strict = dev32_bb.embed(frames)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    dev16_bb = load_backbone("resnet152", base.model_copy(update={"device": str(device), "bf16": True}))
    dev16 = dev16_bb.embed(frames)
    scale = float(np.abs(cpu).max()) + 1e-12
    return {"device": str(device), "max_rel_diff_fp32_cpu_vs_device": float(np.abs(dev32 - cpu).max()) / scale,
            "device_fp32_kind": _fp32_kind(device),
            "max_rel_diff_strict_fp32_cpu_vs_device": float(np.abs(dev32_strict - cpu).max()) / scale,
            "max_rel_diff_device_bf16_vs_cpu_fp32": float(np.abs(dev16 - cpu).max()) / scale,
            "device_bf16_used": dev16_bb.provenance["precision"],
            "note": None if device.type == "cuda" else "no GPU in this run: CPU compared with itself"}


def _print_step(name: str, result: dict) -> None:
    print(f"\n== {name}", flush=True)
    print(json.dumps(result, indent=2, default=str), flush=True)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="cuda | cuda:N | cpu | auto (cuda when present)")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (tests; CPU machines)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--skip", nargs="*", default=[], help="steps to skip: roofline extract path build train agree")
    ap.add_argument("--harness", action=argparse.BooleanOptionalAction, default=True,
                    help="start a temporary Prefect server for the build step (off: use PREFECT_API_URL)")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: --device cuda but no CUDA device is visible (use --device cpu)")
    sizes = SIZES["tiny" if args.tiny else "full"]
    warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
    results: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "device": str(device),
                     "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
                     "torch": torch.__version__, "cuda": torch.version.cuda, "tiny": args.tiny,
                     "cpu_threads": torch.get_num_threads(), "steps": {}}
    print(f"gpu_check on {results['device']} ({results['device_name']}), torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}, tiny={args.tiny}", flush=True)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vtr-gpu-check-") as tmp:
        work = Path(args.workdir or tmp)
        steps = [("roofline", lambda: matmul_roofline(device, sizes["matmul_n"], sizes["matmul_reps"])),
                 ("extract", lambda: backbone_throughput(device, sizes, results["steps"]["roofline"])),
                 ("path", lambda: extract_path(device, sizes, work / "path")),
                 ("build", lambda: _with_harness(args.harness, lambda: sample_build(device, sizes, work / "build"))),
                 ("train", lambda: train_eval(device, sizes, work / "train")),
                 ("agree", lambda: feature_agreement(device, sizes))]
        for name, fn in steps:
            if name in args.skip or (name == "extract" and "roofline" in args.skip):
                continue
            t0 = time.perf_counter()
            results["steps"][name] = {**fn(), "step_s": round(time.perf_counter() - t0, 2)}
            _print_step(name, results["steps"][name])
    results["total_s"] = round(time.perf_counter() - t_all, 1)
    results["within_budget"] = results["total_s"] <= BUDGET_S
    ex = results["steps"].get("extract")
    if ex:
        print(f"\nResNet152 on {device}: bf16 {ex['bf16']['frames_per_s']:.1f} frames/s "
              f"({ex['bf16']['pct_of_roofline']:.1f} % of the {ex['bf16']['roofline_kind']} matmul roofline), "
              f"fp32 {ex['fp32']['frames_per_s']:.1f} frames/s ({ex['fp32']['pct_of_roofline']:.1f} % of the "
              f"{ex['fp32']['roofline_kind']} roofline)")
    print(f"gpu_check done in {results['total_s']} s (budget {BUDGET_S} s: "
          f"{'met' if results['within_budget'] else 'NOT met'})", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str))
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
    main()
