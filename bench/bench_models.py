"""Every registered model (hanet, hgr, hcmi) on the same data in the same run: train step time and
evaluation time / peak memory at MSR-VTT test scale.

    .venv/bin/python bench/bench_models.py [--models hanet hgr hcmi] [--steps 4] [--eval-captions 2]

Data: the MSR-VTT-like shard tree of bench/bench_eval.py (2,990 test videos, 20 captions each,
2048-d random frame features, 15-45 frames sampled to 20; written once under --workdir).
Each model with its DEFAULT config (D=1024 for HANet/HGR, 512 for HCMI-style; shapes from the
shards), random init, Adam lr 1e-4.

* train: batch 64 through pipeline.learn.batches.TrainBatches -> model.loss -> backward -> Adam; the
  models run on the SAME batches, interleaved step by step (the order rotates), so load from
  other jobs hits all alike; the first step of each is a warm-up and not counted.
* eval: each model in its OWN subprocess (independent peak RSS): pipeline.learn.evaluate.evaluate_model
  on all 2,990 videos x --eval-captions captions per video; the full 59,800-caption time is
  EXTRAPOLATED from the measured per-caption (text encode + scoring) cost and labelled so; the
  peak RSS is measured (it does not grow with the caption count: ranks stream, only one caption
  chunk of scores is held). Bound checked: peak RSS <= 3 GB.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

FULL_VIDEOS, CAPS_PER_VIDEO = 2990, 20
RSS_BOUND_GB = 3.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build(root: Path, name: str, train: bool = False):
    import torch

    from models import registry
    from pipeline.learn.dataset import dataset_shapes, load_word_embeddings

    shapes = dataset_shapes(root, "resnet152", "test")
    shapes.update(n_verb_concepts=512, n_noun_concepts=1024)  # default K_a/K_e (planted test-only vocab is empty)
    spec = registry.get_spec(name)
    cfg = registry.fill_shapes(spec.config_cls(), shapes)
    torch.manual_seed(0)
    model = registry.create_model(name, cfg, load_word_embeddings(root))
    return model.train(train), cfg.data_config()


def child_eval(root: Path, name: str, caps: int) -> dict:
    from pipeline.learn.config import EvalConfig
    from pipeline.learn.dataset import load_split
    from pipeline.learn.evaluate import evaluate_model

    model, dcfg = build(root, name)
    data = load_split(root, "test", dcfg).head(FULL_VIDEOS, caps)
    t = time.perf_counter()
    m = evaluate_model(model, data, EvalConfig(n_heatmaps=0))
    wall = time.perf_counter() - t
    per_caption = (m["text_encode_seconds"] + m["score_seconds"] + m["rank_seconds"]) / data.n_captions
    full = m["video_encode_seconds"] + per_caption * FULL_VIDEOS * CAPS_PER_VIDEO
    return {"model": name, "n_videos": data.n_videos, "n_captions": data.n_captions, "wall_s": wall,
            "video_encode_s": m["video_encode_seconds"], "text_encode_s": m["text_encode_seconds"],
            "score_s": m["score_seconds"], "full_scale_s_extrapolated": full, "peak_rss_mb": peak_rss_mb(),
            "video_cache_mb": m["video_cache_mb"]}


def bench_train(root: Path, names: list[str], steps: int, batch: int) -> dict:
    import torch

    from pipeline.learn.dataset import load_split
    from pipeline.learn.batches import TrainBatches

    built = {n: build(root, n, train=True) for n in names}
    data = load_split(root, "test", built[names[0]][1])
    for n, (_, dcfg) in built.items():
        if (dcfg.max_words, dcfg.max_verbs, dcfg.max_nouns, dcfg.max_frames) != (
                data.hcfg.max_words, data.hcfg.max_verbs, data.hcfg.max_nouns, data.hcfg.max_frames):
            raise SystemExit(f"{n}: default data caps differ from {names[0]}'s; same batches impossible")
    opts = {n: torch.optim.Adam(m.parameters(), lr=1e-4) for n, (m, _) in built.items()}
    times: dict[str, list[float]] = {n: [] for n in names}
    batches = iter(TrainBatches(data, batch, 0, 0, True, steps + 1, 0))
    for i in range(steps + 1):
        vb, tb, lb = next(batches)
        order = names[i % len(names):] + names[:i % len(names)]
        for n in order:
            model, opt = built[n][0], opts[n]
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            model.loss(vb, tb, lb)["total"].backward()
            opt.step()
            if i:
                times[n].append(time.perf_counter() - t)
    from models.layers import count_parameters

    return {n: {"median_step_s": statistics.median(ts), "min_step_s": min(ts), "steps": len(ts),
                "params": count_parameters(built[n][0])} for n, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("VTR_BENCH_DIR", "/tmp/vtr_bench")))
    ap.add_argument("--models", nargs="+", default=["hanet", "hgr", "hcmi"])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-captions", type=int, default=2, help="captions per video in the eval runs")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--child-eval", default="")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from bench_eval import prepare

    root = prepare(args.workdir, FULL_VIDEOS)
    if args.child_eval:
        print(json.dumps(child_eval(root, args.child_eval, args.eval_captions)))
        return
    print(f"[bench_models] {args.models}, {args.threads} threads, data {root}", flush=True)
    if not args.skip_train:
        res = bench_train(root, args.models, args.steps, args.batch)
        print(f"\ntrain step, batch {args.batch} (median of {args.steps}, interleaved on the same batches):")
        for n, r in res.items():
            print(f"  {n:6s} {r['median_step_s']:7.3f} s/step (min {r['min_step_s']:.3f})   params {r['params']:,}")
    if not args.skip_eval:
        print(f"\neval: 2,990 videos x {args.eval_captions} captions each (own subprocess per model):")
        ok = True
        for n in args.models:
            out = subprocess.run([sys.executable, __file__, "--child-eval", n, "--workdir", str(args.workdir),
                                  "--eval-captions", str(args.eval_captions), "--threads", str(args.threads)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            within = r["peak_rss_mb"] / 1024 <= RSS_BOUND_GB
            ok &= within
            print(f"  {n:6s} measured {r['wall_s']:7.1f} s for {r['n_captions']:,} captions "
                  f"(videos {r['video_encode_s']:.1f} s, text {r['text_encode_s']:.1f} s, "
                  f"scoring {r['score_s']:.1f} s); "
                  f"59,800 captions EXTRAPOLATED {r['full_scale_s_extrapolated'] / 60:.1f} min; "
                  f"peak RSS {r['peak_rss_mb'] / 1024:.2f} GB ({'<=' if within else '>'} {RSS_BOUND_GB} GB); "
                  f"video cache {r['video_cache_mb']:.0f} MB")
        print(f"\nmemory bound {RSS_BOUND_GB} GB: {'met by every model' if ok else 'EXCEEDED'}")


if __name__ == "__main__":
    main()
