"""Search: two-stage (shortlist + full HANet re-ranking of the top K) vs exhaustive, IN THE SAME RUN.

    .venv/bin/python bench/bench_search.py [--videos 3200] [--queries 600] [--threads 2]

Part 1, planted-signal index (pipeline/datasets/planted.py, >= 3,000 videos, 30 verbs / 40 nouns, 2
events per video): a small HANet (D=64) is trained on the train split, then EVERY video of
every split is indexed (pipeline.search.index.build_index). Queries = the first caption of test
videos, run through the full search path (spaCy parse + role graph + words -> ids, text
encoder, stage 1, stage 2). For each query the target is its own video; R@1/5/10 over the
whole index for two-stage (K=100; the default level-pooled shortlist, and the global-only
one) and exhaustive (every video scored by the full model), and per-query latency (p50/p95
of the whole search() call, text processing included). Modes alternate query by query so
machine load hits them alike. The index is built (shards, training, indexing) in a child
process and searched from a fresh one, as `vtr index` then `vtr search` / `vtr serve`.
Targets: two-stage R@10 within 1 point of exhaustive; p95 latency <= 50 ms on 2 threads.

Part 2, a synthetic 100,000-video index of global embeddings only (D=1024, HANet's default
joint_dim; clustered unit vectors), written and memory-mapped through storage/index.py:
stage-1 latency (matrix-vector product + top K: exact float32, and the default, which uses a
float16 copy when that is measurably faster here, then re-scores the best 4K+64 exactly)
and memory. Target: <= 100 ms.

Every ratio printed is between numbers measured in this run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

TARGET_R10_GAP, TARGET_P95_MS, TARGET_SHORTLIST_MS = 1.0, 50.0, 100.0


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs), q))


def recall(ranks: np.ndarray, k: int) -> float:
    return 100.0 * float((ranks <= k).mean())


def build_part(args, work: Path) -> None:
    """The offline side: planted shards, training, the index (run in a child process)."""
    from models.config import HANetConfig
    from pipeline.learn.config import TrainConfig
    from pipeline.datasets.planted import make_planted_shards
    from pipeline.search.index import build_index
    from pipeline.learn.train import run_train

    t0 = time.perf_counter()
    root = make_planted_shards(work / "planted", n_videos=args.videos, captions_per_video=3, n_verbs=30, n_nouns=40,
                               feat_dim=64, n_frames=12, seed=0, split_fractions=(0.35, 0.05, 0.60))
    print(f"planted shards: {args.videos} videos ({time.perf_counter() - t0:.1f} s)", flush=True)
    h = HANetConfig(joint_dim=64, gcn_attn_dim=32, max_frames=12, n_action_clips=4, n_entity_clips=6, se_reduction=8)
    cfg = TrainConfig(hanet=h, batch_size=64, epochs=args.epochs, lr=1e-2, seed=0, log_every=0, patience=args.epochs)
    t0 = time.perf_counter()
    summary = run_train(root, work / "run", cfg)
    print(f"trained {args.epochs} epochs in {time.perf_counter() - t0:.1f} s, best val rsum "
          f"{summary['best_rsum']:.1f}", flush=True)
    t0 = time.perf_counter()
    meta = build_index(summary["best_checkpoint"], root, n_thumbs=0)
    print(f"indexed {meta['n_videos']} videos in {time.perf_counter() - t0:.1f} s", flush=True)
    (work / "built.json").write_text(json.dumps({"index_dir": meta["index_dir"], "root": str(root)}))


def query_part(args, work: Path) -> dict:
    """The online side, in a fresh process (as `vtr search` / `vtr serve` after `vtr index`)."""
    from pipeline.search.query import Searcher
    from storage.tables import read_table

    built = json.loads((work / "built.json").read_text())
    root, meta = Path(built["root"]), {"index_dir": built["index_dir"]}
    s = Searcher(meta["index_dir"])                      # default shortlist: level-pooled
    sg = Searcher(meta["index_dir"], shortlist="global")  # same index, global embeddings only
    row_of = {v["key"]: v["row"] for v in s.videos}
    caps = read_table(root / "captions.parquet", "captions").to_pylist()
    first: dict[str, str] = {}
    for c in sorted(caps, key=lambda c: c["caption_id"]):
        if c["split"] == "test":
            first.setdefault(c["key"], c["caption"])
    queries = list(first.items())[:args.queries]
    for _ in range(3):  # warm-up (spaCy, allocator)
        s.search(queries[0][1], top=10, k=args.k)
        sg.search(queries[0][1], top=10, k=args.k)
    modes = {"two-stage": (s, False), "global-only": (sg, False), "exhaustive": (s, True)}
    ranks = {m: [] for m in modes}
    lat = {m: [] for m in modes}
    parts = {"text": [], "shortlist": [], "rerank": []}
    same_top10 = 0
    names = list(modes)
    for i, (key, text) in enumerate(queries):
        target = row_of[key]
        tops = {}
        for mode in names[i % 3:] + names[:i % 3]:  # rotate the order: load hits every mode alike
            searcher, exhaustive = modes[mode]
            t = time.perf_counter()
            res = searcher.search(text, top=10, k=args.k, exhaustive=exhaustive)
            lat[mode].append((time.perf_counter() - t) * 1e3)
            rows = [h["row"] for h in res["results"]]
            ranks[mode].append(rows.index(target) + 1 if target in rows else s.n + 1)
            tops[mode] = rows[:10]
            if mode == "two-stage":
                for p in parts:
                    parts[p].append(res["timing_ms"]["text" if p == "text" else f"{p}_ms"])
        same_top10 += tops["two-stage"] == tops["exhaustive"]
    out = {"n_videos": s.n, "n_queries": len(queries), "k": args.k, "same_top10": same_top10,
           "shortlist_levels": s.meta["shortlist_levels"]}
    for mode in ranks:
        r = np.asarray(ranks[mode])
        out[mode] = {"R@1": recall(r, 1), "R@5": recall(r, 5), "R@10": recall(r, 10),
                     "p50_ms": pct(lat[mode], 50), "p95_ms": pct(lat[mode], 95)}
    out["stage_ms_p50"] = {p: pct(v, 50) for p, v in parts.items()}
    out["stage_ms_p95"] = {p: pct(v, 95) for p, v in parts.items()}
    out["chance_R@10"] = 100.0 * 10 / s.n
    return out


def synthetic_part(args, work: Path) -> dict:
    import torch

    from pipeline.search.shortlist import ShortlistMatrix
    from storage import index as store

    n, d, k = args.synthetic, args.dim, args.k
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((256, d)).astype(np.float32)
    x = centres[rng.integers(0, 256, n)] + 0.7 * rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = store.IndexWriter(work / "synthetic")
    w.write({"shortlist": x}, [{"row": i, "key": f"v{i}", "split": "test", "n_frames": 0, "source": "", "caption": "",
                                "thumbs": []} for i in range(n)], {"synthetic": True})
    w.commit()
    del x
    rss0 = rss_mb()
    t0 = time.perf_counter()
    arrays = store.read_arrays(store.current_build(work / "synthetic"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        m = torch.from_numpy(arrays["shortlist"])
    t_open = (time.perf_counter() - t0) * 1e3
    queries = torch.nn.functional.normalize(torch.from_numpy(
        centres[rng.integers(0, 256, args.synthetic_queries)] + rng.standard_normal((args.synthetic_queries, d)).astype(np.float32)), dim=-1)
    exact = ShortlistMatrix(m, fast="off")
    t0 = time.perf_counter()
    auto = ShortlistMatrix(m, fast="auto")  # float16 copy if measurably faster on this CPU (probed)
    t_fast = (time.perf_counter() - t0) * 1e3
    exact.topk(queries[0], k)  # first touch pages the matrix in
    lat = {"exact": [], "auto": []}
    agree = 0
    for i, q in enumerate(queries):
        for name, sm in ((("exact", exact), ("auto", auto)) if i % 2 == 0 else (("auto", auto), ("exact", exact))):
            t = time.perf_counter()
            rows, _ = sm.topk(q, k)
            lat[name].append((time.perf_counter() - t) * 1e3)
            if name == "exact":
                ref = rows
            else:
                got = rows
        agree += np.array_equal(ref, got)
    assert ref.size == k
    return {"n_videos": n, "dim": d, "k": k, "matrix_mb": n * d * 4 / 2 ** 20, "open_ms": t_open,
            "fast_path": auto.m16 is not None, "fast_setup_ms": t_fast, "fast_copy_mb": auto.nbytes / 2 ** 20,
            "same_rows": agree, "n_queries": len(queries),
            **{f"{name}_p50_ms": pct(v, 50) for name, v in lat.items()},
            **{f"{name}_p95_ms": pct(v, 95) for name, v in lat.items()},
            "rss_before_open_mb": rss0, "rss_after_mb": rss_mb(),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=3200)
    ap.add_argument("--queries", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--synthetic", type=int, default=100_000)
    ap.add_argument("--synthetic-queries", type=int, default=60)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default="")
    ap.add_argument("--json", default="", help="also write the numbers to this file")
    ap.add_argument("--build-only", default="", help=argparse.SUPPRESS)  # internal: the child that builds
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.build_only:
        build_part(args, Path(args.build_only))
        return 0
    with tempfile.TemporaryDirectory(dir=args.workdir or None) as tmp:
        work = Path(tmp)
        cmd = [sys.executable, __file__, "--build-only", str(work)] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k in ("videos", "epochs", "threads")]
        subprocess.run(cmd, check=True)
        p = query_part(args, work)
        s = synthetic_part(args, work)
    two, glo, ex = p["two-stage"], p["global-only"], p["exhaustive"]
    gap, gap_g = ex["R@10"] - two["R@10"], ex["R@10"] - glo["R@10"]
    print(f"\n== bench_search ({args.threads} torch threads, {os.cpu_count()} CPUs, load average at the end "
          f"{os.getloadavg()[0]:.1f}; every ratio below is between numbers of THIS run)")
    print(f"planted index: {p['n_videos']} videos, {p['n_queries']} queries (first caption of test videos), K={p['k']}; "
          f"chance R@10 {p['chance_R@10']:.2f} %; latency = whole search() call, text processing included")
    print(f"{'mode':>30} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'p50 ms':>7} {'p95 ms':>7}")
    for mode, r in ((f"two-stage (levels shortlist)", two), ("two-stage (global-only shortlist)", glo),
                    ("exhaustive", ex)):
        print(f"{mode:>30} {r['R@1']:6.2f} {r['R@5']:6.2f} {r['R@10']:6.2f} {r['p50_ms']:7.1f} {r['p95_ms']:7.1f}")
    print(f"two-stage stages p50 / p95 ms: " + ", ".join(
        f"{k} {p['stage_ms_p50'][k]:.1f} / {p['stage_ms_p95'][k]:.1f}" for k in p["stage_ms_p50"]))
    print(f"same top-10 list as exhaustive: {p['same_top10']}/{p['n_queries']} queries")
    print(f"R@10 gap exhaustive - two-stage (same run): {gap:+.2f} points  [target <= {TARGET_R10_GAP}] "
          f"{'MET' if gap <= TARGET_R10_GAP else 'NOT MET'}  (global-only shortlist: {gap_g:+.2f})")
    print(f"p95 latency two-stage: {two['p95_ms']:.1f} ms  [target <= {TARGET_P95_MS:.0f}] "
          f"{'MET' if two['p95_ms'] <= TARGET_P95_MS else 'NOT MET'}; speed-up vs exhaustive (same run, p50): "
          f"{ex['p50_ms'] / two['p50_ms']:.1f}x")
    print(f"\nsynthetic index: {s['n_videos']:,} videos x {s['dim']} global dims (float32, {s['matrix_mb']:.0f} MB, "
          f"memory-mapped), K={s['k']}, {s['n_queries']} queries")
    print(f"exact float32 matmul + top-K: p50 {s['exact_p50_ms']:.1f} ms, p95 {s['exact_p95_ms']:.1f} ms")
    print(f"default (float16 copy {'USED' if s['fast_path'] else 'not faster here, not used'}"
          f"{', %.0f MB, set up in %.0f ms' % (s['fast_copy_mb'], s['fast_setup_ms']) if s['fast_path'] else ''}; "
          f"exact re-score of the best 4K+64): p50 {s['auto_p50_ms']:.1f} ms, p95 {s['auto_p95_ms']:.1f} ms  "
          f"[target <= {TARGET_SHORTLIST_MS:.0f}] {'MET' if s['auto_p95_ms'] <= TARGET_SHORTLIST_MS else 'NOT MET'}; "
          f"same top-K rows as exact: {s['same_rows']}/{s['n_queries']}; speed-up vs exact (same run, p50): "
          f"{s['exact_p50_ms'] / s['auto_p50_ms']:.1f}x")
    print(f"memory: RSS {s['rss_before_open_mb']:.0f} MB before opening, {s['rss_after_mb']:.0f} MB after the queries "
          f"(mapped float32 matrix {s['matrix_mb']:.0f} MB, page cache; float16 copy {s['fast_copy_mb']:.0f} MB); "
          f"process peak RSS {s['peak_rss_mb']:.0f} MB (includes the planted part's searchers)")
    ok = gap <= TARGET_R10_GAP and two["p95_ms"] <= TARGET_P95_MS and s["auto_p95_ms"] <= TARGET_SHORTLIST_MS
    if args.json:
        Path(args.json).write_text(json.dumps({"planted": p, "synthetic": s, "targets_met": ok}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
