"""Search latency and accuracy at full MSR-VTT size (10,000 videos) and at 35,000, old and new path in the SAME run.

    .venv/bin/python bench/bench_search_scale.py --shards <fullsize>/shards/msrvtt --checkpoint <fullsize>/run/best.pt \
        --work /tmp/vss_bench [--from-index <fullsize>/index] [--extra 25000] [--queries 300] [--measure-only]

Indexes (written once into --work, reused by --measure-only):
* 10k: ``build_index`` of every video of a bench_fullsize.py MSR-VTT x1 build with its trained checkpoint (the
  product path: stored outputs, shortlist rows and the re-rank's prepared arrays), or with --from-index the rows
  of that build's own index plus the prepared arrays computed from its stored components (same function);
* 35k: the same 10,000 rows + ``--extra`` SYNTHETIC distractor rows (a synthetic index of the right shapes, not
  a VATEX build): each mixes two random real rows, 0.6 x one + 0.4 x the other, component by component (frames,
  clips, global vector, concept probabilities; masks of the first), so each distractor is close to a real video
  (a hard distractor) yet is none of them; its shortlist rows and prepared arrays are recomputed from the mixed
  components by the product's code.
  Written block by block (storage IndexWriter.write_blocks): never whole in memory.

Per index, in one process, with one shared spaCy parser: ``old`` = Searcher(rerank="model", coarse="off") (the
path before this change: exact or float16 shortlist, model.similarity_parts re-rank), ``new`` = Searcher()
(coarse shortlist + prepared re-rank). Queries: the first caption of each test video (target = its video),
each run through both in alternating order; per query the wall and process-CPU time of the whole search()
call (spaCy parse included) and its stage times. Accuracy: R@1/R@10 of both, and of EXHAUSTIVE ranking (every
video scored by model.similarity_parts, all queries at once, block by block) on the first
--exhaustive-queries queries; how much of the exact top-K shortlist the coarse pass keeps; how often the top-10
lists of old and new agree. Every ratio printed is between numbers of this run.
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

import numpy as np  # noqa: E402

TARGET_P95_MS, TARGET_R10_GAP = 50.0, 1.0
MIX, BLOCK = 0.4, 1024
COMPONENTS = ("ind_a", "ind_e", "loc_a", "loc_e", "glo")


def pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q))


# ----------------------------------------------------------------------------- indexes
def _noisy_block(src: dict, rows: np.ndarray, rng: np.random.Generator, levels: list[str], fusion: str) -> dict:
    """Distractor rows: copies of ``rows`` of the source arrays with noisy components / probabilities."""
    import torch

    from pipeline.search.encode import pooled_video_levels
    from pipeline.search.rerank import prepared_video_arrays

    out = {k: np.asarray(a[rows]) for k, a in src.items()}
    other = np.sort(rng.integers(0, src["shortlist"].shape[0], rows.size))  # a second real row per distractor
    perm = rng.permutation(rows.size)
    for comp in COMPONENTS:  # 0.6 x_row + 0.4 x_other, component by component (cheap: no per-element RNG)
        out[f"enc/{comp}"] = (1 - MIX) * out[f"enc/{comp}"] + MIX * np.asarray(src[f"enc/{comp}"][other])[perm]
    for kind in ("verb", "noun"):
        p = out[f"enc/{kind}_probs"]
        out[f"enc/{kind}_probs"] = ((1 - MIX) * p + MIX * np.asarray(src[f"enc/{kind}_probs"][other])[perm])
    ve = {k[4:]: torch.from_numpy(v) for k, v in out.items() if k.startswith("enc/")}
    out["shortlist"] = torch.nn.functional.normalize(ve["glo"].float(), dim=-1).numpy()
    lv = pooled_video_levels(ve, sorted(ve))
    assert lv is not None and lv[0] == levels, (lv and lv[0], levels)
    out["shortlist_levels"] = lv[1].numpy()
    out.update({f"prep/{k}": v.numpy() for k, v in prepared_video_arrays(ve, sorted(ve), fusion).items()})
    return out


def copy_with_prepared(args) -> None:
    """--from-index: the rows of an index ``build_index`` wrote before the prepared arrays existed, plus those
    arrays computed from its stored components by the same function build_index calls (no re-encoding)."""
    import torch

    from pipeline.search.encode import load_model
    from pipeline.search.rerank import prepared_video_arrays
    from storage import index as store

    b = store.current_build(args.from_index)
    src, videos, meta = store.read_arrays(b), store.read_videos(b), store.read_meta(b)
    fusion = load_model(args.checkpoint)[0].cfg.attn_fusion
    keep = sorted(k[4:] for k in src if k.startswith("enc/"))

    def blocks():
        for a in range(0, len(videos), BLOCK):
            out = {k: np.asarray(v[a:a + BLOCK]) for k, v in src.items() if not k.startswith("prep/")}
            ve = {k: torch.from_numpy(out[f"enc/{k}"]) for k in keep}
            out.update({f"prep/{k}": v.numpy() for k, v in prepared_video_arrays(ve, keep, fusion).items()})
            yield out

    meta = {k: v for k, v in meta.items() if k not in ("schema_version", "build", "n_videos")}
    meta.update(checkpoint=str(Path(args.checkpoint).resolve()), shards_root=str(Path(args.shards).resolve()),
                prepared_from=str(b))
    w = store.IndexWriter(Path(args.work) / "index10k")
    try:
        with torch.inference_mode():
            w.write_blocks(blocks(), videos, meta, sum(int(a.nbytes) for a in src.values()) * 11 // 10)
        w.commit()
    except BaseException:
        w.abort()
        raise


def build_indexes(args) -> None:
    import torch

    from pipeline.search.encode import load_model
    from pipeline.search.index import build_index
    from storage import index as store

    work = Path(args.work)
    t = time.perf_counter()
    if args.from_index:
        copy_with_prepared(args)
    else:
        build_index(args.checkpoint, args.shards, work / "index10k", n_thumbs=0)
    b10 = store.current_build(work / "index10k")
    print(f"10k index: {store.read_meta(b10)['n_videos']} videos in {time.perf_counter() - t:.0f} s", flush=True)
    src, videos, m10 = store.read_arrays(b10), store.read_videos(b10), store.read_meta(b10)
    n0 = len(videos)
    fusion = load_model(args.checkpoint)[0].cfg.attn_fusion
    rng = np.random.default_rng(0)
    base = rng.integers(0, n0, args.extra)
    base = np.concatenate([np.sort(base[a:a + BLOCK]) for a in range(0, args.extra, BLOCK)])  # each block in order

    def blocks():
        for a in range(0, n0, BLOCK):
            yield {k: np.asarray(v[a:a + BLOCK]) for k, v in src.items()}
        for a in range(0, args.extra, BLOCK):
            yield _noisy_block(src, base[a:a + BLOCK], rng, m10["shortlist_levels"], fusion)

    rows = videos + [{"row": n0 + j, "key": f"distractor{j:05d}", "split": "extra",
                      "n_frames": videos[int(i)]["n_frames"], "source": "", "caption": "", "thumbs": []}
                     for j, i in enumerate(base)]
    n = n0 + args.extra
    per_row = sum(int(np.prod(a.shape[1:])) * a.dtype.itemsize for a in src.values())
    meta = {k: v for k, v in m10.items() if k not in ("schema_version", "build", "n_videos")}
    meta["arrays"] = {k: [[n, *a.shape[1:]], str(a.dtype)] for k, a in src.items()}
    meta["synthetic_distractors"] = {"rows": args.extra, "mix": MIX, "seed": 0}
    t = time.perf_counter()
    w = store.IndexWriter(work / "index35k")
    try:
        with torch.inference_mode():
            w.write_blocks(blocks(), rows, meta, per_row * n)
        w.commit()
    except BaseException:
        w.abort()
        raise
    print(f"35k index: {n} videos ({args.extra} synthetic distractors) in {time.perf_counter() - t:.0f} s", flush=True)


# ----------------------------------------------------------------------------- measuring
def first_captions(shards: Path, n: int) -> list[tuple[str, str]]:
    from storage.tables import read_table

    first: dict[str, str] = {}
    for c in read_table(shards / "captions.parquet", "captions", columns=["key", "split", "caption"]).to_pylist():
        if c["split"] == "test":
            first.setdefault(c["key"], c["caption"])
    return list(first.items())[:n]


def latency(searchers: dict, queries: list, row_of: dict) -> dict:
    """Each query through every searcher (rotating order); wall, CPU, stage times, ranks, top-10 rows."""
    names = list(searchers)
    out = {m: {"wall": [], "cpu": [], "text": [], "shortlist_ms": [], "rerank_ms": [], "rank": [], "top": []}
           for m in names}
    for i, (key, text) in enumerate(queries):
        for m in names[i % len(names):] + names[:i % len(names)]:
            t, c = time.perf_counter(), time.process_time()
            res = searchers[m].search(text, top=10)
            r = out[m]
            r["wall"].append((time.perf_counter() - t) * 1e3)
            r["cpu"].append((time.process_time() - c) * 1e3)
            for k in ("text", "shortlist_ms", "rerank_ms"):
                r[k].append(res["timing_ms"][k])
            rows = [h["row"] for h in res["results"]]
            r["rank"].append(rows.index(row_of[key]) + 1 if row_of[key] in rows else 11)
            r["top"].append(rows)
    return out


def exhaustive_ranks(s, queries: list, row_of: dict, block: int = 256) -> np.ndarray:
    """Rank of each query's video when EVERY video is scored by model.similarity_parts (all queries at once)."""
    import torch

    tes = [s.encode_query(text)[0] for _, text in queries]
    te = {k: torch.cat([t[k] for t in tes]) for k in tes[0]}
    target = np.asarray([row_of[k] for k, _ in queries])
    scores = np.empty((s.n, len(queries)), dtype=np.float32)
    with torch.inference_mode():
        for a in range(0, s.n, block):
            p = s.model.similarity_parts(s._rows(torch.arange(a, min(s.n, a + block))), te)
            scores[a:a + block] = ((p["c_l"] + p["c_p"]) / 2).numpy()
    own = scores[target, np.arange(len(queries))]
    return 1 + (scores > own[None, :]).sum(0)  # ties counted in the query's favour, as search's row order


def shortlist_kept(s, queries: list, k: int) -> float:
    """Mean fraction of the EXACT top-k shortlist rows that the searcher's shortlist returns."""
    import torch

    from pipeline.search.encode import pooled_text_levels

    m = s.shortlist.m
    kept = []
    for _, text in queries:
        te = s.encode_query(text)[0]
        q = pooled_text_levels(te, s.meta["shortlist_levels"])
        exact = set(np.argpartition(-(m @ q).numpy(), k - 1)[:k].tolist())
        with torch.inference_mode():
            got = set(s.shortlist.topk(q, k)[0].tolist())
        kept.append(len(exact & got) / k)
    return float(np.mean(kept))


def measure_index(args, index_dir: Path, parser) -> dict:
    from pipeline.search.encode import DEFAULT_K
    from pipeline.search.query import Searcher

    t = time.perf_counter()
    old = Searcher(index_dir, parser=parser, rerank="model", coarse="off")
    t_old = time.perf_counter() - t
    t = time.perf_counter()
    new = Searcher(index_dir, parser=parser)
    t_new = time.perf_counter() - t
    row_of = {v["key"]: v["row"] for v in new.videos}
    queries = first_captions(Path(args.shards), args.queries)
    for _ in range(3):
        old.search(queries[0][1]), new.search(queries[0][1])
    lat = latency({"old": old, "new": new}, queries, row_of)
    out = {"n_videos": new.n, "n_queries": len(queries), "k": DEFAULT_K, "open_s": {"old": t_old, "new": t_new},
           "old_shortlist": old.shortlist.mode, "new_shortlist": new.shortlist.mode, "new_prepared": new.prepared,
           "coarse_setup_s": new.shortlist.setup_s, "coarse_mb": new.shortlist.nbytes / 2 ** 20,
           "same_top10": int(sum(a == b for a, b in zip(lat["old"]["top"], lat["new"]["top"])))}
    for m, r in lat.items():
        rk = np.asarray(r["rank"])
        out[m] = {"p50_ms": pct(r["wall"], 50), "p95_ms": pct(r["wall"], 95), "cpu_p50_ms": pct(r["cpu"], 50),
                  "cpu_p95_ms": pct(r["cpu"], 95), "R@1": 100 * float((rk <= 1).mean()),
                  "R@10": 100 * float((rk <= 10).mean()), "ranks": rk.tolist(),
                  **{f"{k}_p50": pct(r[k], 50) for k in ("text", "shortlist_ms", "rerank_ms")},
                  **{f"{k}_p95": pct(r[k], 95) for k in ("text", "shortlist_ms", "rerank_ms")}}
    out["shortlist_kept"] = shortlist_kept(new, queries[:100], DEFAULT_K)
    nq = min(args.exhaustive_queries, len(queries))
    if nq:
        t = time.perf_counter()
        ex = exhaustive_ranks(old, queries[:nq], row_of)
        out["exhaustive"] = {"n_queries": nq, "R@1": 100 * float((ex <= 1).mean()),
                             "R@10": 100 * float((ex <= 10).mean()), "seconds": time.perf_counter() - t,
                             **{f"{m}_R@10_same_queries": 100 * float((np.asarray(lat[m]["rank"][:nq]) <= 10).mean())
                                for m in lat}}
    out["load_after"] = os.getloadavg()
    return out


# ----------------------------------------------------------------------------- report
def report(res: dict, args) -> bool:
    print(f"\n== bench_search_scale ({args.threads} torch threads, {os.cpu_count()} CPUs; uptime load before "
          f"{res['load_before'][0]:.1f}/{res['load_before'][1]:.1f}/{res['load_before'][2]:.1f}; every ratio is "
          f"between numbers of THIS run; old = rerank='model', coarse='off' (the path before), new = defaults)")
    ok = True
    for name, r in res["sizes"].items():
        o, n = r["old"], r["new"]
        print(f"\n[{name}] {r['n_videos']:,} videos, {r['n_queries']} queries, K={r['k']}; shortlist old "
              f"'{r['old_shortlist']}', new '{r['new_shortlist']}' (set up in {r['coarse_setup_s']:.1f} s, "
              f"{r['coarse_mb']:.0f} MB); open old {r['open_s']['old']:.1f} s, new {r['open_s']['new']:.1f} s; "
              f"load after {r['load_after'][0]:.1f}")
        print(f"{'':>6} {'p50 ms':>8} {'p95 ms':>8} {'cpu p50':>8} {'cpu p95':>8} {'R@1':>6} {'R@10':>6}   "
              "stage p50 / p95 ms: text, shortlist, rerank")
        for m, x in (("old", o), ("new", n)):
            print(f"{m:>6} {x['p50_ms']:8.1f} {x['p95_ms']:8.1f} {x['cpu_p50_ms']:8.1f} {x['cpu_p95_ms']:8.1f} "
                  f"{x['R@1']:6.2f} {x['R@10']:6.2f}   {x['text_p50']:.1f}/{x['text_p95']:.1f}, "
                  f"{x['shortlist_ms_p50']:.1f}/{x['shortlist_ms_p95']:.1f}, {x['rerank_ms_p50']:.1f}/"
                  f"{x['rerank_ms_p95']:.1f}")
        print(f"new vs old (same run): p50 {o['p50_ms'] / n['p50_ms']:.2f}x, p95 {o['p95_ms'] / n['p95_ms']:.2f}x, "
              f"CPU p50 {o['cpu_p50_ms'] / n['cpu_p50_ms']:.2f}x; re-rank p50 {o['rerank_ms_p50'] / n['rerank_ms_p50']:.1f}x"
              f", shortlist p50 {o['shortlist_ms_p50'] / max(n['shortlist_ms_p50'], 1e-9):.1f}x; same top-10 list "
              f"{r['same_top10']}/{r['n_queries']}; exact top-{r['k']} shortlist rows kept by the new shortlist "
              f"{100 * r['shortlist_kept']:.2f} % (100 queries)")
        met = n["p95_ms"] <= TARGET_P95_MS
        line = f"p95 new {n['p95_ms']:.1f} ms [target <= {TARGET_P95_MS:.0f}] {'MET' if met else 'NOT MET'}"
        ex = r.get("exhaustive")
        if ex:
            gap = ex["R@10"] - ex["new_R@10_same_queries"]
            line += (f"; exhaustive R@10 {ex['R@10']:.2f} on {ex['n_queries']} queries ({ex['seconds']:.0f} s), new "
                     f"{ex['new_R@10_same_queries']:.2f}, old {ex['old_R@10_same_queries']:.2f}: gap {gap:+.2f} "
                     f"[target <= {TARGET_R10_GAP}] {'MET' if gap <= TARGET_R10_GAP else 'NOT MET'}")
            ok &= gap <= TARGET_R10_GAP
        ok &= met
        print(line)
    print(f"process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", required=True, help="a bench_fullsize MSR-VTT x1 build's shards/msrvtt")
    ap.add_argument("--checkpoint", required=True, help="its trained run/best.pt")
    ap.add_argument("--work", required=True, help="where the two indexes are written")
    ap.add_argument("--extra", type=int, default=25_000, help="synthetic distractor rows of the 35k index")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--exhaustive-queries", type=int, default=300)
    ap.add_argument("--sizes", default="10k,35k")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--measure-only", action="store_true", help="reuse the indexes in --work")
    ap.add_argument("--from-index", default="", help="a 10k index built before the prepared arrays existed: copied "
                    "with them added (instead of re-encoding every video)")
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)  # internal: the child that builds
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.build_only:
        build_indexes(args)
        return 0
    if not args.measure_only:  # built in a child: the measuring process starts fresh, as `vtr serve` would
        subprocess.run([sys.executable, __file__, "--build-only"] + sys.argv[1:], check=True)
    from pipeline.search.encode import QueryParser
    from storage import index as store

    res = {"load_before": os.getloadavg(), "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "sizes": {}}
    meta = store.read_meta(store.current_build(Path(args.work) / "index10k"))
    parser = QueryParser(meta.get("text_config"), meta.get("concept_config"))
    for name in args.sizes.split(","):
        res["sizes"][name] = measure_index(args, Path(args.work) / f"index{name}", parser)
        print(f"[{name}] measured", flush=True)
        if args.json:  # each size as soon as it is measured
            Path(args.json).write_text(json.dumps(res, default=float))
    ok = report(res, args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, default=float))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
