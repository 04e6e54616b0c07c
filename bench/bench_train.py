"""Training step time at batch 64, default HANetConfig: ours vs a reference-style baseline IN THE SAME RUN.

    .venv/bin/python bench/bench_train.py [--steps 8] [--threads 2]

Default HANetConfig (D=1024, 20 frames x 2048-d, 512/1024 concepts, 300-d words) with a
10,500-word vocabulary (MSR-VTT size), random init, Adam lr 1e-4. Batches come from a
planted shard tree (written once under --workdir; 15-45 frames per video, so some videos are
padded) through the production path: pipeline.learn.batches.TrainBatches -> loss -> backward -> Adam.

Four variants, each with its own model (same initial weights) and optimizer, run on the SAME
batches, interleaved step by step in this one process (the order rotates every step), so load
from other jobs hits all of them alike:

* ours           - the product's step (pipeline.learn.train.train_step), default TrainConfig
                   (precision 'fp32'; HANet fidelity 'improved': padding masked);
* ours-reference - the same step, HANetConfig(fidelity='reference') (the reference's maths);
* baseline       - bench/_reference_train.py: the reference code's data flow on the
                   ours-reference model's weights (per-sample MIL / clip loops, dense padded BN,
                   every pair scored densely with materialised attended vectors). Before timing,
                   its loss is checked equal to ours-reference on the first batch (dropout off);
* ours (precision=bf16) - the product's step with TrainConfig(precision='bf16') resolved as
                   run_train resolves it (pipeline.learn.precision.resolve_precision): bf16
                   autocast for the forward pass where this CPU has native bf16; without it the
                   option falls back to fp32 and the variant is not run (--no-bf16 skips it).

The first step of each variant is a warm-up and not counted. Ours' peak RSS (fp32, and bf16
when run) is measured in child processes that train one variant alone (the parent holds four
models). The reference code's own step time, measured elsewhere, is printed as context only,
labelled with its date.
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
LABELS = {"ours": "ours (fp32, default)", "ours-reference": "ours-reference", "baseline": "baseline",
          "ours-bf16": "ours (precision=bf16)"}  # RESULTS keep the short keys (bench/readme_table.py)


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


def product_precision(precision: str) -> bool:
    """Whether pipeline.learn.train would run TrainConfig(precision=...) under bf16 autocast here."""
    import torch

    from pipeline.learn.config import TrainConfig
    from pipeline.learn.precision import resolve_precision

    return resolve_precision(TrainConfig(precision=precision).precision, torch.device("cpu"))[0]


def child_rss(args) -> None:
    """Ours alone (warm-up + steps, the product's step at ``--precision``): peak RSS of a training process."""
    import torch

    from pipeline.learn.train import train_step

    torch.set_num_threads(args.threads)
    cfgs, batches, _ = setup(args)
    model, opt = new_model(cfgs["ours"])
    bf16 = product_precision(args.precision)
    for i, (vb, tb, lb) in enumerate(batches):
        if i > args.rss_steps:
            break
        train_step(model, opt, vb, tb, lb, bf16=bf16)
    print("RSS " + json.dumps({"peak_rss_gb": rss_gb(), "steps": args.rss_steps + 1, "bf16": bf16}), flush=True)


def measure_rss(args, precision: str) -> float:
    """Peak RSS of a child that trains ours alone at ``precision``; started before this process grows
    (Linux keeps the parent's high-water mark in ru_maxrss across fork + exec)."""
    child = subprocess.run([sys.executable, __file__, "--child-rss", "--workdir", str(args.workdir), "--threads",
                            str(args.threads), "--batch", str(args.batch), "--vocab", str(args.vocab),
                            "--rss-steps", str(args.rss_steps), "--precision", precision],
                           capture_output=True, text=True)
    lines = [ln for ln in child.stdout.splitlines() if ln.startswith("RSS ")]
    if child.returncode != 0 or not lines:
        raise RuntimeError(f"rss child failed (rc {child.returncode}):\n{child.stderr[-3000:]}")
    return json.loads(lines[-1][4:])["peak_rss_gb"]


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
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help=argparse.SUPPRESS)  # --child-rss
    ap.add_argument("--no-bf16", action="store_true", help="skip the ours (precision=bf16) variant")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    if args.child_rss:
        child_rss(args)
        return
    from _reference_train import reference_loss
    from models.layers import count_parameters

    from pipeline.learn.train import train_step

    # TrainConfig(precision='bf16') as run_train resolves it on this CPU (native bf16 or the fp32 fallback)
    bf16_native = product_precision("bf16")
    bf16 = bf16_native and not args.no_bf16
    # peak RSS first, in children started before this process grows
    ours_rss = measure_rss(args, "fp32")
    bf16_rss = measure_rss(args, "bf16") if bf16 else None
    cfgs, batches, batches_ref = setup(args)
    models = {"ours": new_model(cfgs["ours"]), "ours-reference": new_model(cfgs["ours-reference"])}
    models["baseline"] = new_model(cfgs["ours-reference"])
    if bf16:  # the product's precision='bf16' option (RESULTS key 'ours-bf16')
        models["ours-bf16"] = new_model(cfgs["ours"])
    load = os.getloadavg()
    print(f"bench_train: torch threads {args.threads}; load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} on "
          f"{os.cpu_count()} CPUs (other jobs share this CPU: absolute times are pessimistic; the {len(models)} variants "
          f"run interleaved on the same batches, so their RATIOS are what this bench measures)", flush=True)
    print(f"model: {count_parameters(models['ours'][0]):,} trainable parameters (reference: {REF_PARAMS:,}, of which "
          f"3,148,800 never used); vocab {cfgs['ours'].vocab_size:,}", flush=True)
    print("TrainConfig(precision='bf16') on this CPU: " + (
        "bf16 autocast (native bf16)" + (", variant skipped (--no-bf16)" if args.no_bf16 else "") if bf16_native
        else "fp32 fallback (no native bf16): the option trains in fp32 here, variant not run"), flush=True)

    it, it_ref = iter(batches), iter(batches_ref)
    first_ref = next(iter(batches_ref))
    a, b = verify(models["ours-reference"][0], first_ref)
    same = abs(a - b) <= 1e-5 * max(1.0, abs(a))
    print(f"baseline verified against ours-reference on batch 0 (dropout off): loss {b:.6f} vs {a:.6f} "
          f"-> {'EQUAL' if same else 'DIFFERENT'} (|diff| {abs(a - b):.2e})", flush=True)

    def step(name, batch):
        model, opt = models[name]
        t0, c0 = time.perf_counter(), time.process_time()
        if name == "baseline":
            opt.zero_grad(set_to_none=True)
            loss = reference_loss(model, *batch)
            loss.backward()
            opt.step()
        else:  # the product's step (pipeline.learn.train.train_step), as run_train calls it
            loss = train_step(model, opt, *batch, bf16=name == "ours-bf16")["total"]
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
            print("warm-up step: " + ", ".join(f"{LABELS[n]} {row[n][0]:.2f} s" for n in names), flush=True)
            continue
        for n in names:
            times[n].append(row[n][0])
            cpu_t[n].append(row[n][2])
        print(f"step {i}: data {data_t[-1]:.3f} s (x2 configs); " + ", ".join(
            f"{LABELS[n]} {row[n][0]:.2f} s (loss {row[n][1]:.4f})" for n in names), flush=True)

    med = {n: statistics.median(times[n]) for n in names}
    med_data = statistics.median(data_t[1:]) / 2  # each batch was built for 2 configs
    ratio = med["baseline"] / med["ours"]
    ratio_ref = med["baseline"] / med["ours-reference"]
    ratio_bf16 = med["baseline"] / med["ours-bf16"] if bf16 else None

    def per_step(name):
        r = [b / o for b, o in zip(times["baseline"], times[name])]
        return f"per-step ratios {min(r):.2f}-{max(r):.2f}x"

    def target(r):
        return "OK" if r >= TARGET_RATIO else "MISSED"

    print(f"\nmedian step (forward+backward+Adam) over {args.steps} steps: " + ", ".join(
        f"{LABELS[n]} {med[n]:.2f} s" for n in names) + f"; data {med_data * 1000:.0f} ms/batch")
    print(f"[same run] baseline / ours (fp32, default): {ratio:.2f}x ({per_step('ours')}); "
          f"TARGET >= {TARGET_RATIO:.0f}x with the fp32 default: {target(ratio)}")
    if bf16:
        print(f"[same run] baseline / ours (precision=bf16): {ratio_bf16:.2f}x ({per_step('ours-bf16')}); "
              f"TARGET >= {TARGET_RATIO:.0f}x with the bf16 option: {target(ratio_bf16)} "
              f"(ours fp32 / ours bf16: {med['ours'] / med['ours-bf16']:.2f}x)")
    else:
        print(f"[same run] ours (precision=bf16): not run ({'--no-bf16' if bf16_native else 'no native bf16 here'}); "
              f"TARGET >= {TARGET_RATIO:.0f}x with the bf16 option: not measured")
    print(f"[same run] baseline / ours-reference (identical maths, verified equal loss): {ratio_ref:.2f}x")
    print(f"[same run] ours-reference / ours (cost of the reference's padding rules in our code): "
          f"{med['ours-reference'] / med['ours']:.2f}x")
    cpu = {n: statistics.median(cpu_t[n]) for n in names}
    print(f"[same run, process CPU time instead of wall time] baseline / ours: {cpu['baseline'] / cpu['ours']:.2f}x; "
          f"baseline / ours-reference: {cpu['baseline'] / cpu['ours-reference']:.2f}x"
          + (f"; baseline / ours (precision=bf16): {cpu['baseline'] / cpu['ours-bf16']:.2f}x" if bf16 else ""))
    for name, rss in (("fp32, default", ours_rss), ("precision=bf16", bf16_rss)):
        if rss is not None:
            print(f"[separate process, ours ({name}) alone, {args.rss_steps + 1} steps] peak RSS {rss:.2f} GB; TARGET "
                  f"<= {TARGET_RSS_GB:.0f} GB: {'OK' if rss <= TARGET_RSS_GB else 'MISSED'}")
    print(f"(this process, {len(models)} models: peak RSS {rss_gb():.2f} GB)")
    for date, where, lo, hi in REF_ELSEWHERE:
        o = med["ours"]
        rng = f"{lo:.2f} s/step -> {lo / o:.1f}x" if lo == hi else f"{lo:.1f}-{hi:.1f} s/step -> {lo / o:.1f}-{hi / o:.1f}x"
        print(f"[context, measured elsewhere: {date}, {where}] reference code {rng} ours' time here "
              f"(not the same run; reference peak RSS {REF_PEAK_RSS_GB} GB)")
    print("RESULTS " + json.dumps({"median_step_s": med, "steps": times, "cpu_s": cpu_t, "data_s": data_t,
                                   "ratio_same_run": ratio, "ratio_same_run_vs_ours_reference": ratio_ref,
                                   "baseline_verified": same, "baseline_loss0": b, "ours_reference_loss0": a,
                                   "ratio_same_run_bf16": ratio_bf16, "ours_bf16_peak_rss_gb": bf16_rss,
                                   "ours_peak_rss_gb": ours_rss, "load_avg": load, "bf16_variant": bf16,
                                   "bf16_native": bf16_native,
                                   "params": count_parameters(models['ours'][0])}))


if __name__ == "__main__":
    main()
