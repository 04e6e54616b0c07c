"""Full-size rehearsal: MSR-VTT and VATEX at their real sizes, stage by stage, with cost curves.

    .venv/bin/python bench/bench_fullsize.py --dataset msrvtt --scale 0.125   # one size (all stages)
    .venv/bin/python bench/bench_fullsize.py --report                          # table, curves, targets

Data: pipeline/datasets/fullsize.py writes the dataset in HGR's released bundle layout (real split
sizes, captions per video, caption lengths, feature widths and frames per video; planted signal).
Then the product's own code, Prefect-free and in-process (what `vtr build --format hgr-bundle` runs
inside its tasks: pipeline.datasets.bundle_plan.plan steps through pipeline.stage.run_stage; then
pipeline.learn.train.run_train, pipeline.learn.evaluate.run_evaluate, pipeline.search.index.build_index,
pipeline.search.query.Searcher). No Prefect server: its task overhead is per task (a handful per
build), not per video, and would only blur the per-stage figures.

Every stage runs in its OWN child process, so each stage's peak RSS (ru_maxrss), CPU time
(user+sys) and wall are its own; the parent adds the process wall (interpreter + imports) and the
disk used by the dataset's folders after the stage. Stages: generate (the harness writing the
bundle; not part of the product) -> ingest -> import-features -> parse -> concepts -> vocab -> train
(one full epoch + its validation, per-step loader vs compute) -> evaluate (the full test split; FLOPs
counted by torch.utils.flop_counter on a sample and scaled per video / caption / pair, vs a matmul
roofline measured in the same process) -> index (every video) -> search (p50/p95 of whole
search() calls on test captions, text parsing included).

Each size's results go to <work>/results/<dataset>-<scale>.json; --report prints the table of
every measured size, the log-log slopes between sizes (the cost-curve exponents: per video for
most stages, per video x caption pair for evaluation) and the target checks.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_eval import matmul_roofline  # noqa: E402  (one roofline for every bench)

STAGES = ("generate", "ingest", "import-features", "parse", "concepts", "vocab", "train", "evaluate", "index",
          "search")
EXTRA_STAGES = ("evaluate-fp32",)  # on request only: the fp32 evaluation beside a --eval-precision bf16 one
BUNDLE_STAGES = ("ingest", "import-features", "parse", "concepts", "vocab")
FEATURES = {"msrvtt": "imported-resnet152", "vatex": "imported-i3d"}
T_PARSE_CPS, T_EVAL_S, T_EVAL_GB, T_TRAIN_GB, T_P95_MS, T_TOTAL_S = 1000.0, 900.0, 4.0, 8.0, 50.0, 3600.0


def dirs(work: Path, dataset: str, scale: float) -> dict[str, Path]:
    base = work / f"{dataset}-{scale:g}"
    return {"base": base, "bundle": base / "bundle", "out": base / "shards", "shards": base / "shards" / dataset,
            "run": base / "run", "eval": base / "eval", "index": base / "index"}


def usage() -> dict:
    self_, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu_s": self_.ru_utime + self_.ru_stime + kids.ru_utime + kids.ru_stime,
            "peak_rss_mb": max(self_.ru_maxrss, kids.ru_maxrss) / 1024.0}


def build_config(d: dict[str, Path], dataset: str):
    from pipeline.config import BuildConfig
    from pipeline.datasets.bundle import resolve_config

    return resolve_config(BuildConfig.model_validate({
        "dataset": dataset, "out_root": str(d["out"]),
        "ingest": {"format": "hgr-bundle", "dataset_root": str(d["bundle"]), "annotation": ""},
        "text": {"spacy_model": "en_core_web_sm"}}))


# ----------------------------------------------------------------------------- children (one stage each)
def child_bundle_stage(d: dict[str, Path], dataset: str, stage: str) -> dict:
    """The steps of one stage of bundle_plan.plan, through run_stage (as build_bundle / the flow run them)."""
    from pipeline.datasets.bundle_plan import plan
    from pipeline.stage import run_stage
    from storage.atomic import atomic_write_text

    t0 = time.perf_counter()
    cfg = build_config(d, dataset)
    root = d["shards"]
    root.mkdir(parents=True, exist_ok=True)
    if stage == "ingest":
        atomic_write_text(root / "build_config.json", cfg.model_dump_json(indent=2))
    steps = [s for s in plan(cfg) if s.stage == stage]
    t_plan = time.perf_counter() - t0
    counts, timings = {}, {}
    for s in steps:
        m, _ = run_stage(root, s.stage, s.key, lambda s=s: s.fn(**s.kwargs), config=s.config, inputs=s.inputs,
                         code=s.code, shard=s.shard, force=True)
        counts.update(m.counts)
        timings.update(getattr(m, "timings_s", {}) or {})
    return {"plan_s": t_plan, "counts": counts, "timings": timings}


def child_train(d: dict[str, Path], dataset: str, args) -> dict:
    import torch

    import pipeline.learn.train as tr
    from pipeline.learn.config import TrainConfig

    loader = {"s": 0.0, "steps": 0, "first": None}
    parts = {"setup_s": 0.0, "val_s": 0.0, "ckpt_s": 0.0}

    class TimedBatches(tr.TrainBatches):
        def __init__(self, data, batch_size, seed, epoch, unique_videos=True, max_steps=0, num_workers=0):
            super().__init__(data, batch_size, seed, epoch, unique_videos, 0, num_workers)
            loader["epoch_steps"] = len(self.batches)   # a full epoch's steps (before max_steps_per_epoch)
            if max_steps:
                self.batches = self.batches[:max_steps]

        def __iter__(self):
            it = super().__iter__()
            while True:
                t = time.perf_counter()
                try:
                    b = next(it)
                except StopIteration:
                    return
                loader["s"] += time.perf_counter() - t
                loader["steps"] += 1
                yield b

    def timed(name, fn):
        def wrap(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                parts[name] += time.perf_counter() - t
        return wrap

    tr.TrainBatches = TimedBatches
    tr._setup = timed("setup_s", tr._setup)
    tr.evaluate_model = timed("val_s", tr.evaluate_model)
    tr.save_checkpoint = timed("ckpt_s", tr.save_checkpoint)
    cfg = TrainConfig(features=FEATURES[dataset], epochs=1, patience=1, precision=args.precision, log_every=0, seed=0,
                      max_steps_per_epoch=args.train_steps)
    if d["run"].exists():
        shutil.rmtree(d["run"])
    s = tr.run_train(d["shards"], d["run"], cfg, resume=False)
    hist = json.loads(Path(s["history_path"]).read_text())[-1]
    return {"precision": s["precision"], "steps": hist["steps"], "max_steps": args.train_steps,
            "epoch_steps": loader.get("epoch_steps"), "epoch_s": hist["train_seconds"],
            "loader_s": loader["s"], "compute_s": hist["train_seconds"] - loader["s"], **parts,
            "val_rsum": s["best_rsum"], "val_r1": hist["val"].get("t2v_r1"), "batch_size": cfg.batch_size,
            "loss": hist["loss"].get("total"), "torch_threads": torch.get_num_threads(),
            "best_checkpoint": s["best_checkpoint"]}


def eval_flops(checkpoint: Path, shards: Path, features: str) -> dict:
    """FLOPs per video encoded, per caption encoded, per pair scored (torch.utils.flop_counter, a test sample)."""
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.learn.config import EvalConfig
    from pipeline.learn.dataset import load_split
    from pipeline.learn.evaluate import checkpoint_data_config, encode_texts, encode_videos, model_from_checkpoint
    from storage.checkpoints import load_checkpoint

    ck = load_checkpoint(checkpoint)
    model, tcfg = model_from_checkpoint(ck)
    model.eval()
    data = load_split(shards, "test", checkpoint_data_config(ck, tcfg), features)
    nv, nc = min(64, data.n_videos), min(256, data.n_captions)
    cfg, dev = EvalConfig(n_heatmaps=0), torch.device("cpu")
    out = {}
    with torch.inference_mode():
        with FlopCounterMode(display=False) as fc:
            ve = encode_videos(model, data, np.arange(nv), cfg, dev)
        out["per_video"] = fc.get_total_flops() / nv
        with FlopCounterMode(display=False) as fc:
            te = encode_texts(model, data, np.arange(nc), cfg, dev)
        out["per_caption"] = fc.get_total_flops() / nc
        with FlopCounterMode(display=False) as fc:
            model.similarity(ve, te)
        out["per_pair"] = fc.get_total_flops() / (nv * nc)
    return out


def child_evaluate(d: dict[str, Path], dataset: str, args, precision: str) -> dict:
    import torch

    from pipeline.learn.config import EvalConfig
    from pipeline.learn.evaluate import run_evaluate

    ck = d["run"] / "best.pt"
    roof0 = matmul_roofline("float32")
    fast = precision == "bf16"  # the product's opt-in fast path: bf16 caption encoding + bf16 cosine matmul
    t = time.perf_counter()
    rep = run_evaluate(ck, d["shards"], EvalConfig(split="test", n_heatmaps=0, text_bf16=fast, score_bf16=fast),
                       out_dir=d["eval"] / precision)
    wall = time.perf_counter() - t
    eval_usage = usage()
    roof1 = matmul_roofline("float32")
    m = rep["metrics"]
    f = eval_flops(ck, d["shards"], FEATURES[dataset])
    V, C = m["n_videos"], m["n_captions"]
    flops = V * f["per_video"] + C * f["per_caption"] + V * C * f["per_pair"]
    return {"eval_wall_s": wall, "eval_cpu_s": eval_usage["cpu_s"], "eval_peak_rss_mb": eval_usage["peak_rss_mb"],
            "n_videos": V, "n_captions": C, "rsum": rep["rsum"], "t2v_r1": m["t2v_r1"], "t2v_r10": m["t2v_r10"],
            "video_encode_s": m["video_encode_seconds"], "text_encode_s": m["text_encode_seconds"],
            "score_s": m["score_seconds"], "rank_s": m["rank_seconds"], "flops": flops, "flops_per": f,
            "gflops_achieved": flops / wall / 1e9, "roofline_gflops": max(roof0, roof1),
            "roofline_before_after": [roof0, roof1], "torch_threads": torch.get_num_threads(),
            "chance_r1": 100.0 / V, "eval_precision": precision, "score_matmul_bf16": m.get("score_matmul_bf16", 0.0),
            "bf16_roofline_gflops": matmul_roofline("bfloat16") if fast else None}


def child_index(d: dict[str, Path]) -> dict:
    from pipeline.search.index import build_index

    if d["index"].exists():
        shutil.rmtree(d["index"])
    meta = build_index(d["run"] / "best.pt", d["shards"], d["index"], n_thumbs=0)
    return {"n_videos": meta["n_videos"], "encode_s": meta["encode_seconds"], "index_s": meta["seconds"],
            "index_mb": sum(p.stat().st_size for p in d["index"].rglob("*") if p.is_file()) / 2 ** 20}


def child_search(d: dict[str, Path], n_queries: int) -> dict:
    import numpy as np
    import torch

    from pipeline.search.query import Searcher
    from storage.tables import read_table

    t = time.perf_counter()
    s = Searcher(d["index"])
    open_s = time.perf_counter() - t
    row_of = {v["key"]: v["row"] for v in s.videos}
    first: dict[str, str] = {}
    for c in read_table(d["shards"] / "captions.parquet", "captions", columns=["key", "split", "caption"]).to_pylist():
        if c["split"] == "test":
            first.setdefault(c["key"], c["caption"])
    queries = list(first.items())[:n_queries]
    for _ in range(3):
        s.search(queries[0][1], top=10)
    lat, cpu, ranks, stage = [], [], [], {"text": [], "shortlist_ms": [], "rerank_ms": []}
    one_thread = []  # the same queries again, interleaved, with torch on 1 thread (load hits both alike)
    threads = torch.get_num_threads()
    for key, text in queries:
        torch.set_num_threads(1)
        t = time.perf_counter()
        s.search(text, top=10)
        one_thread.append((time.perf_counter() - t) * 1e3)
        torch.set_num_threads(threads)
        t, c = time.perf_counter(), time.process_time()
        res = s.search(text, top=10)
        lat.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
        rows = [h["row"] for h in res["results"]]
        ranks.append(rows.index(row_of[key]) + 1 if row_of[key] in rows else 11)
        for k in stage:
            stage[k].append(res["timing_ms"][k])
    r = np.asarray(ranks)
    return {"n_videos": s.n, "n_queries": len(queries), "open_s": open_s, "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)), "cpu_p50_ms": float(np.percentile(cpu, 50)),
            "cpu_p95_ms": float(np.percentile(cpu, 95)), "R@1": float((r <= 1).mean() * 100),
            "R@10": float((r <= 10).mean() * 100), "shortlist": s.shortlist_mode,
            "stage_p95_ms": {k: float(np.percentile(v, 95)) for k, v in stage.items()},
            "one_thread_p50_ms": float(np.percentile(one_thread, 50)), "one_thread_p95_ms": float(np.percentile(one_thread, 95))}


def child_main(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    d = dirs(args.work, args.dataset, args.scale)
    t0, u0 = time.perf_counter(), usage()
    rss_start = next((int(ln.split()[1]) / 1024 for ln in open("/proc/self/status") if ln.startswith("VmRSS:")), 0.0)
    if args.child == "generate":
        from pipeline.datasets.fullsize import write_fullsize_bundle

        if d["base"].exists():
            shutil.rmtree(d["base"])
        out = write_fullsize_bundle(d["bundle"], args.dataset, args.scale, seed=0)
    elif args.child in BUNDLE_STAGES:
        out = child_bundle_stage(d, args.dataset, args.child)
    elif args.child == "train":
        out = child_train(d, args.dataset, args)
    elif args.child in ("evaluate", "evaluate-fp32"):
        out = child_evaluate(d, args.dataset, args, "fp32" if args.child == "evaluate-fp32" else args.eval_precision)
    elif args.child == "index":
        out = child_index(d)
    else:
        out = child_search(d, args.queries)
    u1 = usage()
    out.update(rss_start_mb=rss_start, stage_wall_s=time.perf_counter() - t0, cpu_s=u1["cpu_s"] - u0["cpu_s"], peak_rss_mb=u1["peak_rss_mb"])
    print("RESULT " + json.dumps(out, default=float), flush=True)


# ----------------------------------------------------------------------------- parent: one size
def du_mb(p: Path) -> float:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 2 ** 20 if p.exists() else 0.0


def run_size(args) -> dict:
    d = dirs(args.work, args.dataset, args.scale)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    res = {"dataset": args.dataset, "scale": args.scale, "threads": args.threads, "precision": args.precision,
           "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "load_before": os.getloadavg(),
           "cpus": os.cpu_count(), "stages": {}}
    out = args.work / "results" / f"{args.dataset}-{args.scale:g}.json"
    if out.exists() and set(args.stages) != set(STAGES):  # re-running some stages: keep the others' figures
        old = json.loads(out.read_text())
        res["stages"] = {k: v for k, v in old["stages"].items() if k not in args.stages}
        res["started_utc"], res["load_before"] = old["started_utc"], old["load_before"]
        res["rerun"] = old.get("rerun", []) + [{"stages": args.stages, "utc": time.strftime("%H:%M", time.gmtime())}]
    for stage in args.stages:
        cmd = [sys.executable, __file__, "--child", stage, "--dataset", args.dataset, "--scale", repr(args.scale),
               "--work", str(args.work), "--threads", str(args.threads), "--precision", args.precision,
               "--queries", str(args.queries), "--train-steps", str(args.train_steps),
               "--eval-precision", args.eval_precision]
        t = time.perf_counter()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        if p.returncode != 0 or not lines:
            res["stages"][stage] = {"failed": True, "rc": p.returncode, "stderr": p.stderr[-3000:]}
            print(f"[{args.dataset} x{args.scale:g}] {stage}: FAILED rc {p.returncode}\n{p.stderr[-3000:]}", flush=True)
            break
        r = json.loads(lines[-1][7:])
        r.update(process_wall_s=wall, load_after=os.getloadavg(), bundle_mb=du_mb(d["bundle"]),
                 shards_mb=du_mb(d["shards"]), run_mb=du_mb(d["run"]), index_mb_disk=du_mb(d["index"]))
        res["stages"][stage] = r
        print(f"[{args.dataset} x{args.scale:g}] {stage:>15}: wall {r['stage_wall_s']:8.1f} s (process "
              f"{wall:7.1f} s), cpu {r['cpu_s']:8.1f} s, peak RSS {r['peak_rss_mb']:7.0f} MB, disk bundle "
              f"{r['bundle_mb']:.0f} MB + shards {r['shards_mb']:.0f} MB; load {r['load_after'][0]:.1f}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1, default=float))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("VTR_FULLSIZE_DIR", "/tmp/vtr_fullsize")))
    ap.add_argument("--dataset", choices=["msrvtt", "vatex"], default="msrvtt")
    ap.add_argument("--scale", type=float, default=0.125, help="1/8, 1/4, 1/2, 1 (= the real sizes); default 1/8 (make bench)")
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES + EXTRA_STAGES)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16", help="training precision (TrainConfig)")
    ap.add_argument("--eval-precision", choices=["fp32", "bf16"], default="fp32",
                    help="evaluate stage: fp32 (EvalConfig defaults, reference parity) or bf16 (text_bf16 + score_bf16)")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--train-steps", type=int, default=0,
                    help="TrainConfig.max_steps_per_epoch (0 = a full epoch; else the epoch time is extrapolated, labelled)")
    ap.add_argument("--report", action="store_true", help="print the table, curves and targets of every stored size")
    ap.add_argument("--child", choices=STAGES + EXTRA_STAGES)
    args = ap.parse_args()
    if args.child:
        child_main(args)
    elif args.report:
        from fullsize_report import report

        report(args.work / "results")
    else:
        run_size(args)


if __name__ == "__main__":
    main()
