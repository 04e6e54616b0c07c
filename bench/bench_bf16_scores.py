"""How far the bf16 evaluation paths' scores sit from fp32 scores, on bench_eval's model.

    python bench/bench_bf16_scores.py [--videos 200] [--workdir /tmp/vtr-bench-eval]

The same model and data as bench/bench_eval.py (planted MSR-VTT-like shards, HANet with the
default sizes, seed 0); every caption is encoded once in fp32 and once under the bf16 text path
(`EvalConfig.text_bf16`), and scored against every video in fp32, with the bf16 cosine matmul
(`EvalConfig.score_bf16`, models.similarity.cosine_matmul_dtype) and with both. Prints, per
variant, the mean and max absolute score difference from fp32, the score range, and how many
t2v / v2t ranks move, and the seconds each scoring took (same run): the README quotes these figures
from this script's committed log (bench/results/bench_bf16_scores-*.txt). A CPU without native
bf16 runs both paths in fp32 (difference 0) and says so.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_eval import build, prepare  # noqa: E402  (bench_eval puts the repo root on sys.path)


def scores(model, data, text_bf16: bool, score_bf16: bool):
    """(scores, seconds of the scoring alone)."""
    import torch

    from pipeline.learn.config import EvalConfig
    from models.similarity import cosine_matmul_dtype
    from pipeline.learn.evaluate import encode_texts, encode_videos

    cfg, dev = EvalConfig(text_bf16=text_bf16), torch.device("cpu")
    ve = encode_videos(model, data, np.arange(data.n_videos), cfg, dev)
    te = encode_texts(model, data, np.argsort(data.cap2vid, kind="stable"), cfg, dev)
    t = time.perf_counter()
    with torch.inference_mode(), cosine_matmul_dtype(torch.bfloat16 if score_bf16 else None):
        s = model.similarity(ve, te).float().numpy()
    return s, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/vtr-bench-eval"))
    args = ap.parse_args()
    import torch

    from models.metrics import retrieval_ranks
    from pipeline.runtime import bf16_is_fast

    load = os.getloadavg()
    print(f"bench_bf16_scores {time.strftime('%Y-%m-%d %H:%M')} torch {torch.__version__} "
          f"load {load[0]:.2f} host {subprocess.run(['uname', '-n'], capture_output=True, text=True).stdout.strip()}")
    if not bf16_is_fast(torch.device("cpu")):
        print("this CPU has no native bf16: text_bf16 runs in fp32 here (difference 0 by construction)")
        return
    model, data = build(prepare(args.workdir, max(args.videos, 600)), args.videos)
    s32, sec32 = scores(model, data, False, False)
    cap2vid = np.sort(data.cap2vid, kind="stable")
    t32, v32 = retrieval_ranks(s32, cap2vid)
    print(f"{data.n_videos} videos x {data.n_captions} captions; fp32 scores in [{s32.min():.3f}, {s32.max():.3f}]; "
          f"fp32 scoring {sec32:.1f} s")
    for name, text16, score16 in (("text_bf16", True, False), ("score_bf16", False, True), ("both", True, True)):
        s16, sec = scores(model, data, text16, score16)
        d = np.abs(s32 - s16)
        t16, v16 = retrieval_ranks(s16, cap2vid)
        tag = "bf16_score_abs_diff" if name == "text_bf16" else f"{name}_score_abs_diff"  # first tag: README rows
        print(f"RESULT {tag} mean {d.mean():.2e} max {d.max():.2e} t2v ranks changed {int((t32 != t16).sum())}/"
              f"{t32.size} v2t ranks changed {int((v32 != v16).sum())}/{v32.size}; scoring {sec:.1f} s "
              f"({sec32 / sec:.2f}x fp32's, same run)")

if __name__ == "__main__":
    main()
