"""How far `EvalConfig(text_bf16=True)` scores sit from fp32 scores, on bench_eval's model.

    python bench/bench_bf16_scores.py [--videos 200] [--workdir /tmp/vtr-bench-eval]

The same model and data as bench/bench_eval.py (planted MSR-VTT-like shards, HANet with the
default sizes, seed 0); every caption is encoded once in fp32 and once under the bf16 text path,
then scored against every video in fp32. Prints the mean and max absolute score difference,
the score range, and how many t2v / v2t ranks move: the README quotes these figures from this
script's committed log (bench/results/bench_bf16_scores-*.txt). A CPU without native bf16
runs the text path in fp32 (difference 0) and says so.
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


def scores(model, data, text_bf16: bool):
    import torch

    from models.config import EvalConfig
    from pipeline.learn.evaluate import encode_texts, encode_videos

    cfg, dev = EvalConfig(text_bf16=text_bf16), torch.device("cpu")
    ve = encode_videos(model, data, np.arange(data.n_videos), cfg, dev)
    te = encode_texts(model, data, np.argsort(data.cap2vid, kind="stable"), cfg, dev)
    with torch.inference_mode():
        return model.similarity(ve, te).float().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/vtr-bench-eval"))
    args = ap.parse_args()
    import torch

    from models.metrics import retrieval_ranks
    from pipeline.devices import bf16_is_fast

    load = os.getloadavg()
    print(f"bench_bf16_scores {time.strftime('%Y-%m-%d %H:%M')} torch {torch.__version__} "
          f"load {load[0]:.2f} host {subprocess.run(['uname', '-n'], capture_output=True, text=True).stdout.strip()}")
    if not bf16_is_fast(torch.device("cpu")):
        print("this CPU has no native bf16: text_bf16 runs in fp32 here (difference 0 by construction)")
        return
    model, data = build(prepare(args.workdir, max(args.videos, 600)), args.videos)
    s32, s16 = scores(model, data, False), scores(model, data, True)
    d = np.abs(s32 - s16)
    cap2vid = np.sort(data.cap2vid, kind="stable")
    (t32, v32), (t16, v16) = retrieval_ranks(s32, cap2vid), retrieval_ranks(s16, cap2vid)
    print(f"{data.n_videos} videos x {data.n_captions} captions; fp32 scores in [{s32.min():.3f}, {s32.max():.3f}]")
    print(f"RESULT bf16_score_abs_diff mean {d.mean():.2e} max {d.max():.2e} "
          f"t2v ranks changed {int((t32 != t16).sum())}/{t32.size} v2t ranks changed {int((v32 != v16).sum())}/{v32.size}")


if __name__ == "__main__":
    main()
