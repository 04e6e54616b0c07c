"""Training step time at batch 64, default HANetConfig: ours vs a reference-style baseline IN THE SAME RUN.

    .venv/bin/python bench/bench_train.py [--steps 8] [--threads 2]

Default HANetConfig (D=1024, 20 frames x 2048-d, 512/1024 concepts, 300-d words) with a
10,500-word vocabulary (MSR-VTT size), random init, Adam lr 1e-4. Batches come from a
planted shard tree (written once under --workdir; 15-45 frames per video, so some videos are
padded) through the production path: pipeline.learn.batches.TrainBatches -> loss -> backward -> Adam.

Three variants, each with its own model (same initial weights) and optimizer, run on the SAME
batches, interleaved step by step in this one process (the order rotates every step), so load
from other jobs hits all of them alike:

* ours           - HANet.loss, default config (fidelity 'improved': padding masked);
* ours-reference - HANet.loss with HANetConfig(fidelity='reference') (the reference's maths);
* baseline       - bench/_reference_train.py: the reference code's data flow on the
                   ours-reference model's weights (per-sample MIL / clip loops, dense padded BN,
                   every pair scored densely with materialised attended vectors). Before timing,
                   its loss is checked equal to ours-reference on the first batch (dropout off).

The first step of each variant is a warm-up and not counted. Ours' peak RSS is measured in a
child process that trains ours alone (the parent holds three models). The reference code's own
step time, measured elsewhere, is printed as context only, labelled with its date.
"""
from __future__ import annotations

import argparse
import copy
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

# the reference code (Roc-Ng/HANet e679703) measured ELSEWHERE, 2 threads, batch 64
# (../shared/notes/reference-facts.md): context only, never the basis of a claimed ratio
REF_ELSEWHERE = [("2026-11-22", "another 2-core machine", 4.70, 4.70),
                 ("2026-11-30", "a 2-core machine like this one, interleaved with ours", 2.5, 2.8)]
REF_PEAK_RSS_GB, REF_PARAMS = 2.6, 28_376_170
TARGET_RATIO, TARGET_RSS_GB = 4.0, 2.0


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def setup(args):
    import torch

    from models.config import HANetConfig
    from pipeline.learn.dataset import dataset_shapes, load_split
    from pipeline.learn.batches import TrainBatches
    from pipeline.datasets.planted import make_planted_shards

    root = args.workdir / "train-bench"
    if not (root / "_stages" / "planted.json").exists():
        print(f"[prepare] writing a planted train shard tree under {root} (once) ...", flush=True)
        make_planted_shards(root, n_videos=400, captions_per_video=5, n_verbs=512, n_nouns=1024, feat_dim=2048,
                            n_frames=30, seed=0, word_dim=300, split_fractions=(1.0, 0.0, 0.0))
    shapes = dataset_shapes(root, "resnet152")
    base = dict(feat_dim=shapes["feat_dim"], vocab_size=max(args.vocab, shapes["vocab_size"]), word_dim=300)
    cfgs = {"ours": HANetConfig(**base), "ours-reference": HANetConfig(**base, fidelity="reference")}
    data = load_split(root, "train", cfgs["ours"])
    data_ref = load_split(root, "train", cfgs["ours-reference"])  # reference role-graph edges
    return cfgs, TrainBatches(data, args.batch, seed=0, epoch=0), TrainBatches(data_ref, args.batch, seed=0, epoch=0)


def new_model(cfg):
    import torch

    from models.hanet import HANet

    torch.manual_seed(0)  # same initial weights for every variant
    model = HANet(cfg).train()  # random 300-d embeddings for a 10.5k vocabulary, like an MSR-VTT run
    return model, torch.optim.Adam(model.parameters(), lr=1e-4)


def child_rss(args) -> None:
    """Ours alone (warm-up + steps): peak RSS of a training process."""
    import torch

    torch.set_num_threads(args.threads)
    cfgs, batches, _ = setup(args)
    model, opt = new_model(cfgs["ours"])
    for i, (vb, tb, lb) in enumerate(batches):
        if i > args.rss_steps:
            break
        opt.zero_grad(set_to_none=True)
        model.loss(vb, tb, lb)["total"].backward()
        opt.step()
    print("RSS " + json.dumps({"peak_rss_gb": rss_gb(), "steps": args.rss_steps + 1}), flush=True)


def verify(model, batch) -> tuple[float, float]:
    """ours-reference loss vs the baseline's on one batch, dropout off (on a copy: no state changes)."""
    import torch

    from _reference_train import reference_loss

    m = copy.deepcopy(model)
    for mod in m.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    with torch.no_grad():
        a = m.loss(*batch)["total"].item()
        b = reference_loss(m, *batch).item()
    return a, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("VTR_BENCH_DIR", "/tmp/vtr_bench")))
    ap.add_argument("--steps", type=int, default=8, help="measured steps per variant (after 1 warm-up)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=10_500)
    ap.add_argument("--rss-steps", type=int, default=4)
    ap.add_argument("--child-rss", action="store_true")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16-autocast what-if variant")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.child_rss:
        child_rss(args)
        return
    from _reference_train import reference_loss
    from models.hanet import count_parameters

    # ours' peak RSS first, in a child started before this process grows (Linux keeps the
    # parent's high-water mark in ru_maxrss across fork + exec)
    child = subprocess.run([sys.executable, __file__, "--child-rss", "--workdir", str(args.workdir), "--threads",
                            str(args.threads), "--batch", str(args.batch), "--vocab", str(args.vocab),
                            "--rss-steps", str(args.rss_steps)], capture_output=True, text=True)
    lines = [ln for ln in child.stdout.splitlines() if ln.startswith("RSS ")]
    if child.returncode != 0 or not lines:
        raise RuntimeError(f"rss child failed (rc {child.returncode}):\n{child.stderr[-3000:]}")
    ours_rss = json.loads(lines[-1][4:])["peak_rss_gb"]
    cfgs, batches, batches_ref = setup(args)
    models = {"ours": new_model(cfgs["ours"]), "ours-reference": new_model(cfgs["ours-reference"])}
    models["baseline"] = new_model(cfgs["ours-reference"])
    from pipeline.devices import bf16_is_fast

    bf16 = bf16_is_fast(torch.device("cpu")) and not args.no_bf16
    if bf16:  # what bf16 autocast WOULD give training (not what pipeline.learn.train does today)
        models["ours-bf16"] = new_model(cfgs["ours"])
    load = os.getloadavg()
    print(f"bench_train: torch threads {args.threads}; load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} on "
          f"{os.cpu_count()} CPUs (other jobs share this CPU: absolute times are pessimistic; the three variants "
          f"run interleaved on the same batches, so their RATIOS are what this bench measures)", flush=True)
    print(f"model: {count_parameters(models['ours'][0]):,} trainable parameters (reference: {REF_PARAMS:,}, of which "
          f"3,148,800 never used); vocab {cfgs['ours'].vocab_size:,}", flush=True)

    it, it_ref = iter(batches), iter(batches_ref)
    first_ref = next(iter(batches_ref))
    a, b = verify(models["ours-reference"][0], first_ref)
    same = abs(a - b) <= 1e-5 * max(1.0, abs(a))
    print(f"baseline verified against ours-reference on batch 0 (dropout off): loss {b:.6f} vs {a:.6f} "
          f"-> {'EQUAL' if same else 'DIFFERENT'} (|diff| {abs(a - b):.2e})", flush=True)

    def step(name, batch):
        model, opt = models[name]
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        if name == "baseline":
            loss = reference_loss(model, *batch)
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "ours-bf16"):
                loss = model.loss(*batch)["total"]
        loss.backward()
        opt.step()
        return time.perf_counter() - t0, loss.item(), time.process_time() - c0

    names = ["ours", "ours-reference", "baseline"] + (["ours-bf16"] if bf16 else [])
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu_t: dict[str, list[float]] = {n: [] for n in names}
    data_t: list[float] = []
    for i in range(args.steps + 1):
        t0 = time.perf_counter()
        batch, batch_ref = next(it), next(it_ref)
        data_t.append(time.perf_counter() - t0)
        row = {}
        for name in names[i % len(names):] + names[:i % len(names)]:  # rotate: no variant always runs first
            row[name] = step(name, batch_ref if name in ("ours-reference", "baseline") else batch)
        if i == 0:
            print("warm-up step: " + ", ".join(f"{n} {row[n][0]:.2f} s" for n in names), flush=True)
            continue
        for n in names:
            times[n].append(row[n][0])
            cpu_t[n].append(row[n][2])
        print(f"step {i}: data {data_t[-1]:.3f} s (x2 configs); " + ", ".join(
            f"{n} {row[n][0]:.2f} s (loss {row[n][1]:.4f})" for n in names), flush=True)

    med = {n: statistics.median(times[n]) for n in names}
    med_data = statistics.median(data_t[1:]) / 2  # each batch was built for 2 configs
    ratio = med["baseline"] / med["ours"]
    ratio_ref = med["baseline"] / med["ours-reference"]
    ratio_steps = [b / o for b, o in zip(times["baseline"], times["ours"])]

    print(f"\nmedian step (forward+backward+Adam) over {args.steps} steps: ours {med['ours']:.2f} s, ours-reference "
          f"{med['ours-reference']:.2f} s, baseline {med['baseline']:.2f} s; data {med_data * 1000:.0f} ms/batch")
    print(f"[same run] baseline / ours: {ratio:.2f}x (per-step ratios {min(ratio_steps):.2f}-{max(ratio_steps):.2f}x); "
          f"TARGET >= {TARGET_RATIO:.0f}x: {'OK' if ratio >= TARGET_RATIO else 'MISSED'}")
    print(f"[same run] baseline / ours-reference (identical maths, verified equal loss): {ratio_ref:.2f}x")
    print(f"[same run] ours-reference / ours (cost of the reference's padding rules in our code): "
          f"{med['ours-reference'] / med['ours']:.2f}x")
    cpu = {n: statistics.median(cpu_t[n]) for n in names}
    print(f"[same run, process CPU time instead of wall time] baseline / ours: {cpu['baseline'] / cpu['ours']:.2f}x; "
          f"baseline / ours-reference: {cpu['baseline'] / cpu['ours-reference']:.2f}x")
    print(f"[separate process, ours alone, {args.rss_steps + 1} steps] peak RSS {ours_rss:.2f} GB; TARGET <= "
          f"{TARGET_RSS_GB:.0f} GB: {'OK' if ours_rss <= TARGET_RSS_GB else 'MISSED'} (this process, {len(models)} models: "
          f"{rss_gb():.2f} GB)")
    if bf16:
        print(f"[same run, what-if] ours with bf16 autocast (native bf16 on this CPU; NOT what pipeline.learn.train does): "
              f"{med['ours-bf16']:.2f} s/step -> baseline / ours-bf16 {med['baseline'] / med['ours-bf16']:.2f}x, "
              f"ours / ours-bf16 {med['ours'] / med['ours-bf16']:.2f}x")
    for date, where, lo, hi in REF_ELSEWHERE:
        o = med["ours"]
        rng = f"{lo:.2f} s/step -> {lo / o:.1f}x" if lo == hi else f"{lo:.1f}-{hi:.1f} s/step -> {lo / o:.1f}-{hi / o:.1f}x"
        print(f"[context, measured elsewhere: {date}, {where}] reference code {rng} ours' time here "
              f"(not the same run; reference peak RSS {REF_PEAK_RSS_GB} GB)")
    print("RESULTS " + json.dumps({"median_step_s": med, "steps": times, "cpu_s": cpu_t, "data_s": data_t,
                                   "ratio_same_run": ratio, "ratio_same_run_vs_ours_reference": ratio_ref,
                                   "baseline_verified": same, "baseline_loss0": b, "ours_reference_loss0": a,
                                   "ours_peak_rss_gb": ours_rss, "load_avg": load, "bf16_variant": bf16,
                                   "params": count_parameters(models['ours'][0])}))


if __name__ == "__main__":
    main()
