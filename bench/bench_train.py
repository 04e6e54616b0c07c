"""Training step time at batch 64, default HANetConfig, vs the reference's 4.70 s/step.

    .venv/bin/python bench/bench_train.py [--steps 8] [--threads 2]

Default HANetConfig (D=1024, 20 frames x 2048-d, 512/1024 concepts, 300-d words) with a
10,500-word vocabulary (MSR-VTT size), random init, Adam lr 1e-4. Batches come from a
planted shard tree (written once under --workdir) through the production path:
pipeline.dataset.TrainBatches (unique videos per batch, HDF5 features) -> model.loss ->
backward -> Adam step, exactly as pipeline.train does. Data time and step time are
measured separately; the first step is a warm-up and not counted.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REF_STEP_S, REF_PEAK_RSS_GB, REF_PARAMS = 4.70, 2.6, 28_376_170


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("VTR_BENCH_DIR", "/tmp/vtr_bench")))
    ap.add_argument("--steps", type=int, default=8, help="measured steps (after 1 warm-up)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=10_500)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from models.config import HANetConfig
    from models.hanet import HANet, count_parameters
    from pipeline.dataset import TrainBatches, dataset_shapes, load_split
    from pipeline.planted import make_planted_shards

    root = args.workdir / "train-bench"
    if not (root / "_stages" / "planted.json").exists():
        print(f"[prepare] writing a planted train shard tree under {root} (once) ...", flush=True)
        make_planted_shards(root, n_videos=400, captions_per_video=5, n_verbs=512, n_nouns=1024, feat_dim=2048,
                            n_frames=30, seed=0, word_dim=300, split_fractions=(1.0, 0.0, 0.0))
    shapes = dataset_shapes(root, "resnet152")
    hcfg = HANetConfig(feat_dim=shapes["feat_dim"], vocab_size=max(args.vocab, shapes["vocab_size"]), word_dim=300)
    torch.manual_seed(0)
    model = HANet(hcfg)  # random 300-d embeddings for a 10.5k vocabulary, like an MSR-VTT run
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    data = load_split(root, "train", hcfg)
    batches = TrainBatches(data, args.batch, seed=0, epoch=0)
    load = os.getloadavg()
    print(f"bench_train: torch threads {args.threads}; load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} on "
          f"{os.cpu_count()} CPUs (other jobs share this CPU: times are pessimistic)", flush=True)
    print(f"model: {count_parameters(model):,} trainable parameters (reference: {REF_PARAMS:,}, of which "
          f"3,148,800 never used); vocab {hcfg.vocab_size:,}", flush=True)

    data_t, step_t, fwd_t = [], [], []
    it = iter(batches)
    for i in range(args.steps + 1):
        t0 = time.perf_counter()
        vb, tb, lb = next(it)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model.loss(vb, tb, lb)["total"]
        t2 = time.perf_counter()
        loss.backward()
        opt.step()
        t3 = time.perf_counter()
        if i == 0:
            print(f"warm-up step: {t3 - t0:.2f} s (loss {loss.item():.4f})", flush=True)
            continue
        data_t.append(t1 - t0)
        fwd_t.append(t2 - t1)
        step_t.append(t3 - t1)
        print(f"step {i}: data {t1 - t0:.3f} s, forward {t2 - t1:.2f} s, forward+backward+Adam {t3 - t1:.2f} s",
              flush=True)
    med = statistics.median(step_t)
    med_total = statistics.median(d + s for d, s in zip(data_t, step_t))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(f"\nmedian step (forward+backward+Adam): {med:.2f} s; with data loading {med_total:.2f} s "
          f"-> {1 / med_total:.2f} steps/s; median forward {statistics.median(fwd_t):.2f} s; "
          f"median data {statistics.median(data_t) * 1000:.0f} ms/batch")
    print(f"reference: {REF_STEP_S:.2f} s/step (2 threads, not under this load) -> ours {REF_STEP_S / med_total:.1f}x "
          f"faster; peak RSS {rss:.2f} GB (reference {REF_PEAK_RSS_GB} GB)")
    print("RESULTS " + json.dumps({"median_step_s": med, "median_step_with_data_s": med_total, "steps": step_t,
                                   "data_s": data_t, "peak_rss_gb": rss, "load_avg": load,
                                   "params": count_parameters(model)}))


if __name__ == "__main__":
    main()
