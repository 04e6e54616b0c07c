"""Evaluation at MSR-VTT test scale: our engine vs a naive reference-style loop.

    .venv/bin/python bench/bench_eval.py                  # full protocol (see --help)
    .venv/bin/python bench/bench_eval.py --quick          # small smoke run

Setup: default HANetConfig (D=1024, 20 frames x 2048-d, 512/1024 concepts, 300-d words),
random weights, random frame features (n ~ 15..45 per video, sampled to 20), planted-style
captions (5-11 words, 1-2 verbs, 2-4 arguments), 20 captions per video, written once as a
real shard tree under --workdir and read through the production readers.

Variants, each in its OWN subprocess (so peak RSS numbers are independent):
* ours  - pipeline.evaluate.evaluate_model: every video and caption encoded once,
          caption-chunk x video-chunk blocks of the fused score, streaming ranks.
* naive - the reference's structure: for every 300-video block re-encode all captions
          in 300-caption batches, keep every part score matrix (7 of them), stack them at
          the end, fuse, rank densely. Run on a subset and extrapolated PER PAIR (its cost
          is flat per pair: text re-encoding scales with videos/300 x captions).
Ours runs at full scale when its estimate fits --budget-s, else at the largest scale that
does and is extrapolated per pair (stated in the output).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REF_US_PER_PAIR = (116.0, 121.0)     # reference code, this kind of machine (reference-facts.md)
REF_PEAK_RSS_GB = 11.7
FULL_VIDEOS, CAPS_PER_VIDEO = 2990, 20
PART_KEYS = ("ind_a", "ind_e", "loc_a", "loc_e", "glo", "jac_a", "jac_e")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def prepare(workdir: Path, n_videos: int) -> Path:
    from pipeline.planted import make_planted_shards

    root = workdir / f"msrvtt-like-{n_videos}"
    if (root / "_stages" / "planted.json").exists():
        return root
    print(f"[prepare] writing a {n_videos}-video shard tree under {root} (once) ...", flush=True)
    t = time.perf_counter()
    make_planted_shards(root, n_videos=n_videos, captions_per_video=CAPS_PER_VIDEO, n_verbs=512, n_nouns=1024,
                        feat_dim=2048, n_frames=30, seed=0, word_dim=300, random_features=True,
                        split_fractions=(0.0, 0.0, 1.0))
    print(f"[prepare] done in {time.perf_counter() - t:.0f} s", flush=True)
    return root


def build(root: Path, n_videos: int):
    import torch

    from models.config import HANetConfig
    from models.hanet import HANet
    from pipeline.dataset import dataset_shapes, load_split, load_word_embeddings

    shapes = dataset_shapes(root, "resnet152", "test")
    shapes.update(n_verb_concepts=512, n_noun_concepts=1024)   # default K_a/K_e (planted test-only vocab is empty)
    hcfg = HANetConfig(**shapes)
    torch.manual_seed(0)
    model = HANet(hcfg, load_word_embeddings(root)).eval()
    data = load_split(root, "test", hcfg).head(n_videos)
    return model, data


def child_ours(root: Path, n_videos: int, args) -> dict:
    from models.config import EvalConfig
    from pipeline.evaluate import evaluate_model

    model, data = build(root, n_videos)
    cfg = EvalConfig(video_chunk=args.video_chunk, caption_chunk=args.caption_chunk, encode_batch=args.encode_batch,
                     score_block=args.score_block, store_dtype=args.store_dtype, n_heatmaps=0)
    rss0 = peak_rss_mb()
    t = time.perf_counter()
    m = evaluate_model(model, data, cfg, progress=lambda s: print(f"  [ours] {s}", flush=True) if args.verbose else None)
    wall = time.perf_counter() - t
    return {"variant": "ours", "n_videos": data.n_videos, "n_captions": data.n_captions, "wall_s": wall,
            "video_encode_s": m["video_encode_seconds"], "rss_before_mb": rss0, "peak_rss_mb": peak_rss_mb(),
            "held_scores_mb": m["held_score_mb_peak"], "rsum": m["rsum"], "config": cfg.model_dump()}


def child_naive(root: Path, n_videos: int, args) -> dict:
    import numpy as np
    import torch

    from models.metrics import retrieval_metrics

    model, data = build(root, n_videos)
    V, C, blk = data.n_videos, data.n_captions, 300
    rss0 = peak_rss_mb()
    t = time.perf_counter()
    parts: dict[str, list[list[np.ndarray]]] = {k: [] for k in PART_KEYS}
    with torch.inference_mode():
        for v0 in range(0, V, blk):
            ve = model.encode_videos(data.video_batch(range(v0, min(V, v0 + blk))))
            rows: dict[str, list[np.ndarray]] = {k: [] for k in PART_KEYS}
            for c0 in range(0, C, blk):
                te = model.encode_texts(data.text_batch(np.arange(c0, min(C, c0 + blk))))  # re-encoded per block
                sp = model.similarity_parts(ve, te)
                for k in PART_KEYS:
                    rows[k].append(sp[k].numpy().copy())
            for k in PART_KEYS:
                parts[k].append(np.concatenate(rows[k], 1))
            if args.verbose:
                print(f"  [naive] videos {min(V, v0 + blk)}/{V}", flush=True)
        full = {k: np.concatenate(parts[k], 0) for k in PART_KEYS}   # seven dense matrices
        c_l = np.mean([full[k] for k in PART_KEYS[:5]], 0)
        c_p = (full["jac_a"] + full["jac_e"]) / 2
        m = retrieval_metrics((c_l + c_p) / 2, data.cap2vid)
    wall = time.perf_counter() - t
    return {"variant": "naive", "n_videos": V, "n_captions": C, "wall_s": wall, "rss_before_mb": rss0,
            "peak_rss_mb": peak_rss_mb(), "rsum": m["rsum"]}


def run_child(variant: str, n_videos: int, args) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--child-videos", str(n_videos), "--workdir",
           str(args.workdir), "--threads", str(args.threads), "--video-chunk", str(args.video_chunk),
           "--caption-chunk", str(args.caption_chunk), "--encode-batch", str(args.encode_batch),
           "--score-block", str(args.score_block), "--store-dtype", args.store_dtype,
           "--full-videos", str(args.full_videos)] + (["--verbose"] if args.verbose else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if args.verbose:
        sys.stderr.write(out.stderr[-3000:])
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{variant} child failed (rc {out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    for ln in out.stdout.splitlines():
        if not ln.startswith("RESULT ") and args.verbose:
            print(ln)
    r = json.loads(lines[-1][7:])
    r["us_per_pair"] = 1e6 * r["wall_s"] / (r["n_videos"] * r["n_captions"])
    r["pairs_per_s"] = r["n_videos"] * r["n_captions"] / r["wall_s"]
    return r


def fmt(r: dict) -> str:
    return (f"{r['variant']:>5}: {r['n_videos']:>5} videos x {r['n_captions']:>6} captions = "
            f"{r['n_videos'] * r['n_captions'] / 1e6:7.2f} M pairs in {r['wall_s']:8.1f} s "
            f"({r['pairs_per_s']:>10,.0f} pairs/s, {r['us_per_pair']:.2f} us/pair), peak RSS {r['peak_rss_mb']:,.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("VTR_BENCH_DIR", "/tmp/vtr_bench")))
    ap.add_argument("--full-videos", type=int, default=FULL_VIDEOS)
    ap.add_argument("--naive-videos", type=int, default=300, help="naive subset: videos (one 300-block)")
    ap.add_argument("--naive-captions-per-video", type=int, default=0, help="0 = all 20")
    ap.add_argument("--probe-videos", type=int, default=300, help="ours: scale of the timing probe")
    ap.add_argument("--budget-s", type=float, default=900.0, help="max wall time for ours' main run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--video-chunk", type=int, default=500)
    ap.add_argument("--caption-chunk", type=int, default=2000)
    ap.add_argument("--encode-batch", type=int, default=256)
    ap.add_argument("--score-block", type=int, default=500)
    ap.add_argument("--store-dtype", default="float32")
    ap.add_argument("--quick", action="store_true", help="tiny scales (smoke test of the bench itself)")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--child", choices=["ours", "naive"])
    ap.add_argument("--child-videos", type=int)
    args = ap.parse_args()

    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        root = prepare(args.workdir, args.full_videos)
        fn = child_ours if args.child == "ours" else child_naive
        print("RESULT " + json.dumps(fn(root, args.child_videos, args)), flush=True)
        return

    if args.quick:
        args.full_videos, args.naive_videos, args.probe_videos, args.budget_s = 120, 60, 60, 60.0
    load = os.getloadavg()
    print(f"bench_eval: {args.threads} threads, load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} on "
          f"{os.cpu_count()} CPUs (other jobs share this CPU: absolute times are pessimistic; ratios are "
          f"measured back to back under the same load)", flush=True)
    prepare(args.workdir, args.full_videos)
    full_pairs = args.full_videos * args.full_videos * CAPS_PER_VIDEO

    naive = run_child("naive", args.naive_videos, args)
    print(fmt(naive), flush=True)
    probe = run_child("ours", args.probe_videos, args)
    print(fmt(probe) + "   [probe]", flush=True)
    # per-pair cost is ~flat; pick the largest video count whose estimate fits the budget
    est_full = probe["us_per_pair"] * full_pairs / 1e6
    n_main = args.full_videos
    if est_full > args.budget_s:
        n_main = int(args.full_videos * (args.budget_s / est_full) ** 0.5)
        n_main = max(args.probe_videos, n_main)
    main_run = probe if n_main == args.probe_videos else run_child("ours", n_main, args)
    if main_run is not probe:
        print(fmt(main_run), flush=True)

    ours_full_s = main_run["us_per_pair"] * full_pairs / 1e6
    naive_full_s = naive["us_per_pair"] * full_pairs / 1e6
    ref_full_h = [u * full_pairs / 1e6 / 3600 for u in REF_US_PER_PAIR]
    scale_note = ("measured at FULL scale" if n_main == args.full_videos else
                  f"EXTRAPOLATED per pair from {main_run['n_videos']} videos x {main_run['n_captions']} captions")
    print("\n=== at MSR-VTT test scale: "
          f"{args.full_videos} videos x {args.full_videos * CAPS_PER_VIDEO} captions = {full_pairs / 1e6:.1f} M pairs ===")
    print(f"ours : {ours_full_s / 60:8.1f} min  ({scale_note}); peak RSS {main_run['peak_rss_mb']:,.0f} MB "
          f"(held score rows peak {main_run['held_scores_mb']:.0f} MB)")
    print(f"naive: {naive_full_s / 60:8.1f} min  (EXTRAPOLATED per pair from {naive['n_videos']} x "
          f"{naive['n_captions']}); its 7 dense part matrices alone would need "
          f"{7 * full_pairs * 4 / 2 ** 30:.1f} GiB")
    print(f"speed-up ours vs naive loop (same model, same load): {naive['us_per_pair'] / main_run['us_per_pair']:.1f}x "
          f"(target >= 5x)")
    print(f"reference code as measured (reference-facts.md): {REF_US_PER_PAIR[0]:.0f}-{REF_US_PER_PAIR[1]:.0f} us/pair "
          f"= {ref_full_h[0]:.1f}-{ref_full_h[1]:.1f} h, peak RSS {REF_PEAK_RSS_GB} GB -> ours is "
          f"{REF_US_PER_PAIR[0] / main_run['us_per_pair']:.0f}-{REF_US_PER_PAIR[1] / main_run['us_per_pair']:.0f}x faster "
          f"(different runs, same kind of machine)")
    ok_rss = main_run["peak_rss_mb"] <= 3 * 1024
    print(f"peak RSS target <= 3 GB: {'OK' if ok_rss else 'MISSED'} ({main_run['peak_rss_mb'] / 1024:.2f} GB"
          + ("" if n_main == args.full_videos else ", at the measured scale; the held score rows grow with scale,"
             " see held_scores_mb") + ")")
    print("RESULTS " + json.dumps({"naive": naive, "probe": probe, "ours": main_run, "ours_full_s": ours_full_s,
                                   "naive_full_s": naive_full_s, "load_avg": load}))


if __name__ == "__main__":
    main()
