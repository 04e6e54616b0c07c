"""The report of bench/bench_fullsize.py: every measured size's stages, the cost-curve exponents and the targets.

Reads <work>/results/<dataset>-<scale>.json (one per size). Exponents are log-log slopes between
consecutive measured sizes: stage wall (and CPU time, peak RSS above the idle interpreter) against
the number of videos; evaluation against videos x captions (pairs). A slope > 1.15 is flagged
(worse than linear, with 15 % allowance for machine noise on a shared 2-core box).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

STAGES = ("generate", "ingest", "import-features", "parse", "concepts", "vocab", "train", "evaluate", "index",
          "search")
PRODUCT = STAGES[1:]  # 'generate' is the harness, not the product
LINEAR_SLACK = 1.15
T_PARSE_CPS, T_EVAL_S, T_EVAL_GB, T_TRAIN_GB, T_P95_MS, T_TOTAL_S = 1000.0, 900.0, 4.0, 8.0, 50.0, 3600.0


def load(results: Path) -> list[dict]:
    runs = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]
    return sorted(runs, key=lambda r: (r["dataset"], r["scale"]))


def size_of(r: dict) -> dict:
    g = r["stages"].get("generate", {})
    ing = r["stages"].get("ingest", {}).get("counts", {})
    ev = r["stages"].get("evaluate", {})
    return {"videos": g.get("videos") or ing.get("videos"), "captions": g.get("captions") or ing.get("captions"),
            "pairs": (ev.get("n_videos") or 0) * (ev.get("n_captions") or 0)}


def _eval_precision(s: dict) -> str:
    if s.get("eval_precision") == "bf16":
        ran = "bf16 cosine matmul ran" if s.get("score_matmul_bf16") else "no native bf16 here: ran fp32"
        return f"EvalConfig(text_bf16, score_bf16) ({ran})"
    return "fp32 (EvalConfig defaults, reference parity)"


def _bf16_roof(s: dict) -> str:
    r = s.get("bf16_roofline_gflops")
    return f" ({s['gflops_achieved'] / r:.0%} of the bf16 one, {r:.0f} GFLOP/s)" if r else ""


def fmt_row(stage: str, s: dict) -> str:
    if s.get("failed"):
        return f"  {stage:>15}: FAILED (rc {s.get('rc')})"
    extra = ""
    if stage == "parse":
        t = s.get("timings", {})
        extra = (f"; {s['counts']['captions'] / max(t.get('parse', 1e-9), 1e-9):,.0f} captions/s parsing "
                 f"(model load {t.get('load', 0):.1f} s, write {t.get('write', 0):.1f} s)")
    elif stage == "train":
        full = s.get("epoch_steps") or s["steps"]
        part = (f"{s['steps']} of the epoch's {full} steps (TrainConfig.max_steps_per_epoch), full epoch "
                f"EXTRAPOLATED {s['epoch_s'] * full / s['steps']:.0f} s" if full > s["steps"] else f"full epoch, {full} steps")
        extra = (f"; {s['precision']}, {part}, batch {s['batch_size']}: trained {s['epoch_s']:.0f} s = loader "
                 f"{s['loader_s']:.0f} s ({1e3 * s['loader_s'] / max(s['steps'], 1):.0f} ms/step) + compute "
                 f"{s['compute_s']:.0f} s ({1e3 * s['compute_s'] / max(s['steps'], 1):.0f} ms/step); setup "
                 f"{s['setup_s']:.0f} s, validation {s['val_s']:.0f} s, checkpoints {s['ckpt_s']:.0f} s; val rsum "
                 f"{s['val_rsum']:.1f}")
    elif stage in ("evaluate", "evaluate-fp32"):
        extra = (f"; {_eval_precision(s)}; {s['n_videos']:,} x {s['n_captions']:,}: {s['eval_wall_s']:.0f} s (video enc "
                 f"{s['video_encode_s']:.0f}, text enc {s['text_encode_s']:.0f}, scoring {s['score_s']:.0f}, ranking "
                 f"{s['rank_s']:.0f}); {s['flops'] / 1e12:.2f} TFLOP, {s['gflops_achieved']:.0f} GFLOP/s = "
                 f"{s['gflops_achieved'] / s['roofline_gflops']:.0%} of the same-run fp32 matmul roofline "
                 f"{s['roofline_gflops']:.0f} GFLOP/s{_bf16_roof(s)}; test R@1 {s['t2v_r1']:.1f} (chance {s['chance_r1']:.2f}), "
                 f"rsum {s['rsum']:.1f}")
    elif stage == "index":
        extra = f"; {s['n_videos']:,} videos, index {s['index_mb']:.0f} MB"
    elif stage == "search":
        extra = (f"; {s['n_videos']:,} videos, {s['n_queries']} queries: p50 {s['p50_ms']:.1f} ms, p95 "
                 f"{s['p95_ms']:.1f} ms (process CPU per query p50 {s.get('cpu_p50_ms', float('nan')):.1f} / p95 "
                 f"{s.get('cpu_p95_ms', float('nan')):.1f} ms; stage p95: {', '.join(f'{k} {v:.1f}' for k, v in s['stage_p95_ms'].items())}"
                 f"); R@10 {s['R@10']:.1f}")
        if "one_thread_p95_ms" in s:
            extra += (f"; the same queries interleaved with torch on 1 thread: p50 {s['one_thread_p50_ms']:.1f} ms, "
                      f"p95 {s['one_thread_p95_ms']:.1f} ms")
    elif stage in ("ingest", "import-features", "concepts", "vocab"):
        c = s.get("counts", {})
        keys = [k for k in ("videos", "captions", "ok", "error", "verbs", "nouns", "words") if k in c]
        extra = "; " + ", ".join(f"{k} {c[k]:,}" for k in keys)
    elif stage == "generate":
        extra = (f"; {s['videos']:,} videos, {s['captions']:,} captions, {s['mean_words']:.2f} words/caption, "
                 f"vocabulary {s['vocabulary']:,}, {s['mean_frames']:.1f} frames/video x {s['dim']}")
    return (f"  {stage:>15}: wall {s['stage_wall_s']:8.1f} s (process {s['process_wall_s']:7.1f} s) cpu "
            f"{s['cpu_s']:8.1f} s  peak RSS {s['peak_rss_mb'] / 1024:5.2f} GB  disk {s['bundle_mb'] / 1024:5.2f} + "
            f"{(s['shards_mb'] + s['run_mb'] + s['index_mb_disk']) / 1024:5.2f} GB{extra}")


def slope(a: float, b: float, na: float, nb: float) -> float | None:
    if min(a, b, na, nb) <= 0 or na == nb:
        return None
    return math.log(b / a) / math.log(nb / na)


COST_LABEL = {"evaluate": " per pair", "train": " epoch (extrapolated where capped)", "search": " p95"}


def cost(stage: str, s: dict) -> tuple[float, float]:
    """(wall, cpu) that should grow at most linearly: evaluation vs pairs; a training EPOCH (steps scaled to the
    full epoch when capped); search p95 latency; else the stage's wall and CPU time."""
    if stage == "evaluate" and "eval_wall_s" in s:
        return s["eval_wall_s"], s["eval_cpu_s"]
    if stage == "train" and s.get("steps"):
        f = (s.get("epoch_steps") or s["steps"]) / s["steps"]
        return s["epoch_s"] * f, s["cpu_s"] * f
    if stage == "search" and "p95_ms" in s:
        return s["p95_ms"], s.get("cpu_p95_ms", s["p95_ms"])
    return s["stage_wall_s"], s["cpu_s"]


def curves(runs: list[dict]) -> list[str]:
    out, worse = [], []
    ms = [r for r in runs if r["dataset"] == "msrvtt"]
    for a, b in zip(ms, ms[1:]):
        sa, sb = size_of(a), size_of(b)
        parts = []
        for st in PRODUCT:
            x, y = a["stages"].get(st, {}), b["stages"].get(st, {})
            if "stage_wall_s" not in x or "stage_wall_s" not in y:
                continue
            unit = "pairs" if st == "evaluate" else "videos"
            (wa, ca), (wb, cb) = cost(st, x), cost(st, y)
            k = slope(wa, wb, sa[unit], sb[unit])
            kc = slope(ca, cb, sa[unit], sb[unit])
            if k is None:
                continue
            parts.append(f"{st}{COST_LABEL.get(st, '')} {k:.2f} (cpu {kc:.2f})")
            if k > LINEAR_SLACK and (kc is None or kc > LINEAR_SLACK):
                worse.append(f"{st} x{a['scale']:g}->x{b['scale']:g}: {k:.2f}")
        out.append(f"  x{a['scale']:g} -> x{b['scale']:g} ({sa['videos']:,} -> {sb['videos']:,} videos): "
                   + "; ".join(parts))
    out.append(f"  worse than linear (wall and cpu slope > {LINEAR_SLACK}): {', '.join(worse) or 'none'}")
    return out


def targets(runs: list[dict]) -> list[str]:
    full = next((r for r in runs if r["dataset"] == "msrvtt" and r["scale"] == 1.0), None)
    out = []
    if full is None:
        return ["  full-size MSR-VTT not measured: no target checked at full size"]
    st = full["stages"]

    def ok(c: bool) -> str:
        return "MET" if c else "MISSED"

    if "parse" in st and "timings" in st["parse"]:
        cps = st["parse"]["counts"]["captions"] / st["parse"]["timings"]["parse"]
        out.append(f"  parse >= {T_PARSE_CPS:,.0f} captions/s: {cps:,.0f} {ok(cps >= T_PARSE_CPS)}")
    if "evaluate" in st and "eval_wall_s" in st["evaluate"]:
        e = st["evaluate"]
        out.append(f"  full evaluation <= {T_EVAL_S / 60:.0f} min [{_eval_precision(e)}]: {e['eval_wall_s'] / 60:.1f} min "
                   f"{ok(e['eval_wall_s'] <= T_EVAL_S)} (process CPU {e['eval_cpu_s'] / 60:.1f} min: >= "
                   f"{e['eval_cpu_s'] / 120:.1f} min even with both cores free; scoring {e['score_s'] / e['eval_wall_s']:.0%}"
                   f" of the wall at {e['flops_per']['per_pair'] * e['n_videos'] * e['n_captions'] / e['score_s'] / 1e9:.0f}"
                   f" GFLOP/s); peak RSS <= {T_EVAL_GB} GB: {e['eval_peak_rss_mb'] / 1024:.2f} GB "
                   f"{ok(e['eval_peak_rss_mb'] / 1024 <= T_EVAL_GB)}; {e['flops'] / 1e12:.2f} TFLOP at "
                   f"{e['gflops_achieved'] / e['roofline_gflops']:.0%} of the same-run matmul roofline")
    if "eval_wall_s" in st.get("evaluate-fp32", {}):
        e = st["evaluate-fp32"]
        out.append(f"  full evaluation [{_eval_precision(e)}]: {e['eval_wall_s'] / 60:.1f} min "
                   f"{ok(e['eval_wall_s'] <= T_EVAL_S)} (CPU {e['eval_cpu_s'] / 60:.1f} min), peak RSS "
                   f"{e['eval_peak_rss_mb'] / 1024:.2f} GB, rsum {e['rsum']:.1f}")
    if "train" in st and "epoch_s" in st["train"]:
        t = st["train"]
        full = t.get("epoch_steps") or t["steps"]
        how = (f"EXTRAPOLATED from {t['steps']} of {full} steps" if full > t["steps"] else "measured, full epoch")
        out.append(f"  train peak RSS <= {T_TRAIN_GB} GB: {t['peak_rss_mb'] / 1024:.2f} GB "
                   f"{ok(t['peak_rss_mb'] / 1024 <= T_TRAIN_GB)}; one epoch ({t['precision']}) "
                   f"{t['epoch_s'] * full / t['steps'] / 60:.1f} min [{how}] (loader {t['loader_s'] / t['epoch_s']:.1%} "
                   f"of the steps' time; {1e3 * t['compute_s'] / t['steps']:.0f} ms compute + "
                   f"{1e3 * t['loader_s'] / t['steps']:.0f} ms loader per step)")
    if not any(r["dataset"] == "vatex" and "p95_ms" in r["stages"].get("search", {}) for r in runs):
        out.append("  search p95 at ~35k videos: NOT MEASURED (VATEX full size did not run)")
    for r in runs:
        s = r["stages"].get("search", {})
        if "p95_ms" in s and r["scale"] == 1.0:
            out.append(f"  search p95 <= {T_P95_MS:.0f} ms at {s['n_videos']:,} videos ({r['dataset']}): "
                       f"{s['p95_ms']:.1f} ms {ok(s['p95_ms'] <= T_P95_MS)}")
    total = sum(s.get("stage_wall_s", 0) for k, s in st.items() if k in PRODUCT)
    ptotal = sum(s.get("process_wall_s", 0) for k, s in st.items() if k in PRODUCT)
    done = all(k in st and "stage_wall_s" in st[k] for k in PRODUCT)
    t = st.get("train", {})
    full, steps = t.get("epoch_steps") or t.get("steps"), t.get("steps")
    extra = t["epoch_s"] * (full / steps - 1) if steps and full and full > steps else 0.0
    how = (f"; with the FULL epoch EXTRAPOLATED from {steps} of {full} steps: {(ptotal + extra) / 60:.1f} min"
           if extra else "")
    out.append(f"  whole MSR-VTT rehearsal <= {T_TOTAL_S / 60:.0f} min: {total / 60:.1f} min in stages, "
               f"{ptotal / 60:.1f} min with process start-up as run{how}{'' if done else ' (INCOMPLETE: not every stage ran)'} "
               f"{ok(ptotal + extra <= T_TOTAL_S and done)} (generating the bundle, the harness: "
               f"{st.get('generate', {}).get('stage_wall_s', 0) / 60:.1f} min more)")
    return out


def report(results: Path) -> None:
    runs = load(results)
    for r in runs:
        sz = size_of(r)
        print(f"\n=== {r['dataset']} x{r['scale']:g}: {sz['videos']:,} videos, {sz['captions']:,} captions; started "
              f"{r['started_utc']} UTC, load before {r['load_before'][0]:.1f}, {r['cpus']} CPUs, {r['threads']} torch "
              f"threads ===")
        for st in STAGES + ("evaluate-fp32",):
            if st in r["stages"]:
                print(fmt_row(st, r["stages"][st]))
    print("\n=== cost-curve exponents (log-log slope between sizes, per video unless said; 1.0 = linear) ===")
    print("\n".join(curves(runs)))
    print("\n=== targets at full MSR-VTT size ===")
    print("\n".join(targets(runs)))
    print("RESULTS " + json.dumps([{"dataset": r["dataset"], "scale": r["scale"], **size_of(r),
                                    "stages": {k: {a: b for a, b in v.items() if a != "stderr"}
                                               for k, v in r["stages"].items()}} for r in runs], default=float))
