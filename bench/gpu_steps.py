"""The measured steps of bench/gpu_check.py. Only pipeline/, models/ and storage/ are imported
(no Prefect, Dask, Ray, spaCy or NLTK): these steps run on the lent GPU machine, whose image lacks
those, with the wheels of requirements/gpu-bundle.txt on PYTHONPATH."""
from __future__ import annotations

import math
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, reps: int) -> float:
    """Median seconds of ``fn`` over ``reps`` calls after one warm-up, each call synchronised
    (the device's queue drained) before its clock is read."""
    fn()  # warm-up (kernel selection, cuDNN autotune, graph freezing)
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def fp32_kind(device: torch.device) -> str:
    """What an 'fp32' convolution really runs as: cuDNN uses TF32 unless told not to (torch default)."""
    return "tf32" if device.type == "cuda" and torch.backends.cudnn.allow_tf32 else "fp32"


# ------------------------------------------------------------------ backbones: frames/s vs roofline

def _shape(extractor: str, sizes: dict) -> tuple[int, ...]:
    """The uint8 input of one forward pass: frames (B, H, W, 3) or clips (B, T, H, W, 3)."""
    crop = sizes["crop"]
    if extractor == "resnet152":
        return (sizes["frames"], crop, crop, 3)
    return (sizes["clips"], sizes["clip_len"], crop, crop, 3)


def flops_per_unit(extractor: str, sizes: dict) -> float:
    """FLOPs (2 x multiply-adds) of one frame (ResNet152) or clip (I3D) through the feature model as
    extraction runs it (head removed), counted by torch's FlopCounterMode on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.video.backbones import feature_arch

    shape = _shape(extractor, sizes)[1:]  # one unit, channels last
    with torch.device("meta"):
        model, x = feature_arch(extractor).eval(), torch.empty((1, 3) + shape[:-1])
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return float(counter.get_total_flops())


def backbone_throughput(device: torch.device, sizes: dict, roofline: dict) -> dict:
    """ResNet152 frames/s and I3D-R50 clips/s as extraction runs them (get_backbone: BN folded,
    channels_last, I3D frozen), bf16 and fp32, as % of the same-precision matmul roofline."""
    from pipeline.config import I3DConfig, ResNetConfig
    from pipeline.video.backbones import get_backbone

    out: dict = {}
    for extractor, cfg_type in (("resnet152", ResNetConfig), ("i3d_r50", I3DConfig)):
        shape = _shape(extractor, sizes)
        batch = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        flops = flops_per_unit(extractor, sizes)
        res = {"flops_per_unit": flops, "unit": "frame" if extractor == "resnet152" else "clip",
               "input_shape": list(shape)}
        for name, bf16 in (("bf16", True), ("fp32", False)):
            bb = get_backbone(extractor, cfg_type(weights="random", device=str(device), bf16=bf16))
            x = bb.prepare(batch)  # the model alone: host->device copy and preprocessing outside the timing
            s = timed(lambda: bb.forward(x), device, sizes["batches"])
            units_s = shape[0] / s
            kind = "bf16" if bb.bf16 else fp32_kind(device)
            achieved = units_s * flops / 1e12
            res[name] = {"precision_used": bb.provenance["precision"], "units_per_s": units_s, "tflops": achieved,
                         "pct_of_roofline": 100 * achieved / roofline[kind]["tflops"], "roofline_kind": kind,
                         "embed_units_per_s": shape[0] / timed(lambda: bb.embed(batch), device, 1)}
        out[extractor] = res
    return out


# ------------------------------------------------------------------ production path, parallel processes

class BusySampler:
    """Samples NVML's GPU utilisation (share of time a kernel ran) every 0.1 s in a thread."""

    def __init__(self, device: torch.device):
        self.device, self.samples, self.error = device, [], None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.samples.append(torch.cuda.utilization(self.device))
            except Exception as exc:  # no pynvml, or NVML refused: say so, never invent a number
                self.error = f"{type(exc).__name__}: {exc}"
                return

    def __enter__(self):
        if self.device.type == "cuda":
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def result(self) -> dict:
        if self.device.type != "cuda":
            return {"gpu_busy_pct": None, "gpu_busy_note": "no GPU in this run"}
        mean = float(np.mean(self.samples)) if self.samples else None
        return {"gpu_busy_pct": mean, "gpu_busy_samples": len(self.samples), "gpu_busy_error": self.error}


def _path_worker(root: str, spec, models: dict, decode, device: str, threads: int) -> dict:
    """One shard through pipeline.video.extract.extract_shards_multi (one decode for both models)."""
    from pipeline.video.extract import extract_shards_multi

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    res = extract_shards_multi(root, spec, models, decode, device=device)
    return {"pid": os.getpid(), "seconds": time.perf_counter() - t0,
            **{name: {"counts": r.counts, "timings_s": r.timings_s} for name, r in res.items()}}


def _sample_shards(sizes: dict, work: Path):
    from pipeline.config import BuildConfig, IngestConfig
    from pipeline.datasets.ingest import run_ingest
    from pipeline.datasets.sample_data import generate_sample_dataset
    from pipeline.video.shards import plan_shards

    t0 = time.perf_counter()
    ann = generate_sample_dataset(work / "data", n_videos=sizes["videos"], seed=0, size=sizes["video_size"],
                                  n_frames=sizes["video_frames"], fps=15)
    cfg = BuildConfig(dataset="gpu", out_root=str(work / "out"),
                      ingest=IngestConfig(dataset_root=str(work / "data/videos"), annotation=str(ann)))
    run_ingest(cfg)
    root = work / "out" / "gpu"
    per_shard = math.ceil(sizes["videos"] / (2 * sizes["workers"]))  # 2 shards per process: balance
    return root, plan_shards(root, per_shard), time.perf_counter() - t0


def extract_path(device: torch.device, sizes: dict, work: Path) -> dict:
    """The production extraction path on sample videos: shards in ``workers`` parallel processes
    (as the Dask runner runs them: one shard task per process), each decoding its videos ONCE for
    ResNet152 + I3D with prefetch threads and feeding the shared device; production configs (bf16)."""
    from pipeline.config import DecodeConfig, I3DConfig, ResNetConfig

    root, specs, prep_s = _sample_shards(sizes, work)
    models = {"resnet152": ResNetConfig(weights="random", device=str(device)),
              "i3d_r50": I3DConfig(weights="random", device=str(device), crop=sizes["crop"],
                                   short_side=max(sizes["crop"], 256 * sizes["crop"] // 224))}
    decode = DecodeConfig(crop=sizes["crop"], short_side=max(sizes["crop"], 256 * sizes["crop"] // 224),
                          frame_stride=sizes["frame_stride"])
    workers = sizes["workers"]
    threads = max(1, (os.cpu_count() or 2) // workers)
    t0 = time.perf_counter()
    with BusySampler(device) as busy, ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        done = list(pool.map(_path_worker, [str(root)] * len(specs), specs, [models] * len(specs),
                             [decode] * len(specs), [str(device)] * len(specs), [threads] * len(specs)))
    wall = time.perf_counter() - t0
    count = lambda ext, key: sum(d[ext]["counts"].get(key, 0) for d in done)  # noqa: E731
    load = max(d["resnet152"]["timings_s"]["load"] for d in done)
    decoded = count("resnet152", "decoded_frames")
    return {"videos": sizes["videos"], "shards": len(specs), "processes": workers, "torch_threads_each": threads,
            "prepare_s": round(prep_s, 2), "wall_s": wall, "max_model_load_s": load,
            "decoded_frames": decoded, "resnet_frames": count("resnet152", "frames"),
            "i3d_clips": count("i3d_r50", "frames"), "ok_videos": count("resnet152", "ok"),
            "decoded_frames_per_s": decoded / wall, "resnet_frames_per_s": count("resnet152", "frames") / wall,
            "decoded_frames_per_s_excl_model_load": decoded / max(wall - load, 1e-9),
            "videos_per_s": sizes["videos"] / wall, **busy.result()}


# ------------------------------------------------------------------ HANet: training steps + full-size evaluation

def train_steps(device: torch.device, sizes: dict, work: Path) -> dict:
    """HANet training steps on planted shards (default model size unless tiny), fp32 and bf16."""
    from models.config import HANetConfig
    from pipeline.learn.config import TrainConfig
    from pipeline.datasets.planted import make_planted_shards
    from pipeline.learn.train import run_train

    tiny = sizes["tiny"]
    root = make_planted_shards(work / "planted", n_videos=sizes["train_videos"], captions_per_video=5,
                               n_verbs=8 if tiny else 512, n_nouns=12 if tiny else 1024,
                               feat_dim=64 if tiny else 2048, n_frames=8 if tiny else 30, seed=0,
                               word_dim=32 if tiny else 300)
    hanet = (HANetConfig(feat_dim=64, word_dim=32, n_verb_concepts=8, n_noun_concepts=12, joint_dim=32, max_frames=8)
             if tiny else HANetConfig(feat_dim=2048, word_dim=300, max_frames=30))
    out: dict = {"steps": sizes["train_steps"], "batch": sizes["batch"], "train_videos": sizes["train_videos"]}
    for precision in ("fp32", "bf16"):
        cfg = TrainConfig(hanet=hanet, epochs=1, batch_size=sizes["batch"], max_steps_per_epoch=sizes["train_steps"],
                          device=str(device), log_every=10 ** 6, precision=precision)
        t0 = time.perf_counter()
        summary = run_train(root, work / f"run-{precision}", cfg, resume=False)
        s = time.perf_counter() - t0
        out[precision] = {"seconds_incl_val": s, "s_per_step_incl_val": s / sizes["train_steps"],
                          "precision_used": summary.get("precision", precision)}
    return out


def full_eval(device: torch.device, sizes: dict, work: Path) -> dict:
    """evaluate_model at MSR-VTT test scale (2,990 videos x 20 captions; tiny: a few) on the device:
    default HANet, random weights, random frame features read through the production readers."""
    from models.config import HANetConfig
    from pipeline.learn.config import EvalConfig
    from models.hanet import HANet
    from pipeline.datasets.planted import make_planted_shards
    from pipeline.learn.dataset import dataset_shapes, load_split, load_word_embeddings
    from pipeline.learn.evaluate import evaluate_model

    n, caps, tiny = sizes["eval_videos"], sizes["eval_captions"], sizes["tiny"]
    t0 = time.perf_counter()
    root = make_planted_shards(work / "eval", n_videos=n, captions_per_video=caps, n_verbs=512, n_nouns=1024,
                               feat_dim=64 if tiny else 2048, n_frames=8 if tiny else 30, seed=0,
                               word_dim=32 if tiny else 300, random_features=True, split_fractions=(0.0, 0.0, 1.0))
    shapes = dataset_shapes(root, "resnet152", "test")
    shapes.update(n_verb_concepts=512, n_noun_concepts=1024)  # default K_a / K_e
    if tiny:
        shapes.update(joint_dim=32)
    hcfg = HANetConfig(**shapes)
    torch.manual_seed(0)
    model = HANet(hcfg, load_word_embeddings(root)).to(device).eval()
    data = load_split(root, "test", hcfg)
    prep_s = time.perf_counter() - t0
    out: dict = {"videos": data.n_videos, "captions": data.n_captions, "prepare_s": round(prep_s, 2)}
    for name, text_bf16 in (("fp32", False), ("text_bf16", True)):
        cfg = EvalConfig(device=str(device), n_heatmaps=0, text_bf16=text_bf16)
        t0 = time.perf_counter()
        m = evaluate_model(model, data, cfg, device=device)
        sync(device)
        out[name] = {"seconds": time.perf_counter() - t0, "video_encode_s": m["video_encode_seconds"],
                     "text_encode_s": m["text_encode_seconds"], "score_s": m["score_seconds"],
                     "rank_s": m["rank_seconds"], "rsum": m["rsum"]}
    return out


# ------------------------------------------------------------------ feature agreement

def _rel(a: np.ndarray, ref: np.ndarray) -> dict:
    """Relative error of ``a`` against ``ref``: norm-wise, and the largest element vs max |ref|."""
    a64, r64 = a.astype(np.float64), ref.astype(np.float64)
    return {"rel_l2": float(np.linalg.norm(a64 - r64) / (np.linalg.norm(r64) + 1e-300)),
            "max_rel": float(np.abs(a64 - r64).max() / (np.abs(r64).max() + 1e-300))}


def feature_agreement(device: torch.device, sizes: dict) -> dict:
    """The same seeded ResNet152 (unfused) on the same fresh random frames, each run compared with a
    float64 reference computed on the CPU: CPU fp32, device fp32 (TF32 convolutions on CUDA by torch's
    default), device strict fp32 (TF32 off), device bf16; and device fp32 vs CPU fp32."""
    from pipeline.config import ResNetConfig
    from pipeline.video.backbones import build_resnet152, get_backbone

    crop = sizes["crop"]
    seed = int(time.time_ns() % 2 ** 31)  # fresh inputs each run (METHOD: same function on any valid input)
    frames = np.random.default_rng(seed).integers(0, 256, (sizes["agree_frames"], crop, crop, 3), dtype=np.uint8)
    base = ResNetConfig(weights="random", bf16=False, fuse_bn=False, device="cpu")
    cpu_bb = get_backbone("resnet152", base)
    model64, _ = build_resnet152(base)  # the same seeded weights, in float64, on the preprocessed frames
    with torch.no_grad():
        ref = model64.double().eval()(cpu_bb.prepare(frames).double()).numpy()
    cpu = cpu_bb.embed(frames)
    dev32_bb = get_backbone("resnet152", base.model_copy(update={"device": str(device)}))
    dev32 = dev32_bb.embed(frames)
    tf32 = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = False
        dev32_strict = dev32_bb.embed(frames)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    dev16_bb = get_backbone("resnet152", base.model_copy(update={"device": str(device), "bf16": True}))
    dev16 = dev16_bb.embed(frames)
    return {"device": str(device), "frames_seed": seed, "reference": "float64, CPU",
            "cpu_fp32_vs_ref": _rel(cpu, ref), "device_fp32_vs_ref": _rel(dev32, ref),
            "device_fp32_kind": fp32_kind(device), "device_strict_fp32_vs_ref": _rel(dev32_strict, ref),
            "device_bf16_vs_ref": _rel(dev16, ref), "device_bf16_used": dev16_bb.provenance["precision"],
            "device_fp32_vs_cpu_fp32": _rel(dev32, cpu),
            "note": None if device.type == "cuda" else "no GPU in this run: 'device' is the CPU"}
