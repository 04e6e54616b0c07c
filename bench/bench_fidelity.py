"""Planted-signal A/B of HANet's reference-fidelity switches (README "Reference fidelity").

    python bench/bench_fidelity.py [--seeds 0 1 2] [--configs improved reference ...]

Each config trains the small planted-data HANet of tests/test_learning.py (joint_dim 32,
batch 64, Adam lr 1e-2, 15 epochs, best-val checkpoint) on one planted shard tree whose
videos have 1-22 frames (frame_jitter 0.9, max_frames 12: many short and padded videos, so
the short-video clip rules and the padding rule actually fire), then evaluates on the
150-video test split. Configs:

  improved            fidelity='improved' (all four of our fixes)
  reference           fidelity='reference' (Roc-Ng/HANet's behaviour everywhere)
  ref-<switch>        'improved' with one switch set to the reference's value
                      (verb_clips, noun_clips, padding, graph_edges)

Prints and appends to bench/results/bench_fidelity-<date>.txt: per config and seed the test
rsum and t2v R@1, then mean / sd and the paired difference to 'improved'.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.config import FIDELITY_SWITCHES, HANetConfig  # noqa: E402
from pipeline.learn.config import EvalConfig, TrainConfig  # noqa: E402
from pipeline.learn.evaluate import run_evaluate  # noqa: E402
from pipeline.datasets.planted import make_planted_shards  # noqa: E402
from pipeline.learn.train import run_train  # noqa: E402

CONFIGS: dict[str, dict] = {"improved": {"fidelity": "improved"}, "reference": {"fidelity": "reference"}}
CONFIGS.update({f"ref-{name}": {"fidelity": "improved", name: ref} for name, (ref, _) in FIDELITY_SWITCHES.items()})


def hcfg(**flags) -> HANetConfig:
    return HANetConfig(joint_dim=32, gcn_attn_dim=16, max_frames=12, n_action_clips=4, n_entity_clips=6,
                       se_reduction=8, **flags)


def run(shards: Path, run_dir: Path, seed: int, flags: dict, epochs: int) -> dict:
    cfg = TrainConfig(hanet=hcfg(**flags), batch_size=64, epochs=epochs, lr=1e-2, seed=seed, log_every=0,
                      patience=epochs)
    summary = run_train(shards, run_dir, cfg)
    rep = run_evaluate(Path(summary["best_checkpoint"]), shards, EvalConfig(n_heatmaps=0, device="cpu"))
    return rep["metrics"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--videos", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = ROOT / "bench" / "results" / f"bench_fidelity-{dt.date.today().isoformat()}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)

    def emit(line: str) -> None:
        print(line, flush=True)
        with open(out, "a") as f:
            f.write(line + "\n")

    results: dict[str, dict[int, dict]] = {c: {} for c in args.configs}
    with tempfile.TemporaryDirectory() as tmp:
        shards = make_planted_shards(Path(tmp) / "planted", n_videos=args.videos, captions_per_video=4, n_verbs=8,
                                     n_nouns=12, feat_dim=64, n_frames=12, seed=0, split_fractions=(0.6, 0.1, 0.3),
                                     frame_jitter=0.9)
        emit(f"# bench_fidelity {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} "
             f"videos={args.videos} frames 1-22 (max_frames 12) epochs={args.epochs} seeds={args.seeds} "
             f"threads={args.threads}")
        for seed in args.seeds:  # seeds outer: a partial run still has paired comparisons
            for name in args.configs:
                t0 = time.perf_counter()
                m = run(shards, Path(tmp) / "runs" / f"{name}-{seed}", seed, CONFIGS[name], args.epochs)
                results[name][seed] = m
                emit(f"{name:18s} seed {seed}: rsum {m['rsum']:6.1f}  t2v R@1 {m['t2v_r1']:5.1f}  "
                     f"v2t R@1 {m['v2t_r1']:5.1f}  ({time.perf_counter() - t0:.0f} s)")
    base = results.get("improved", {})
    emit("# summary: mean (sd) test rsum of 600; paired diff = config - improved, same seed")
    summary = {}
    for name, per_seed in results.items():
        rs = [per_seed[s]["rsum"] for s in sorted(per_seed)]
        diffs = [per_seed[s]["rsum"] - base[s]["rsum"] for s in sorted(per_seed) if s in base]
        sd = statistics.stdev(rs) if len(rs) > 1 else 0.0
        line = f"{name:18s} rsum {statistics.mean(rs):6.1f} ({sd:4.1f})  n={len(rs)}"
        if diffs and name != "improved":
            line += f"  diff {statistics.mean(diffs):+6.1f}  [{', '.join(f'{d:+.1f}' for d in diffs)}]"
        emit(line)
        summary[name] = {"rsum": rs, "diff_vs_improved": diffs}
    emit("# json " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
