#!/usr/bin/env python
"""Run the authors' UNMODIFIED code on `vtr export` output: Roc-Ng/HANet and cshizhe/hgr_v2t train and evaluate.

NOT run by CI (like scripts/make_hanet_golden.py). The reference checkouts live OUTSIDE this
repository (default /work/refs/HANet and /work/refs/hgr_v2t; `git clone` them, the GloVe blobs
are not needed) and are never committed; they run with a separate interpreter (``--python``,
default /work/refs/venv/bin/python: a venv whose only addition is a .pth pointing at this
project's torch/h5py/numpy). Only configuration files are written for them, outside the repo.

1. the planted world of tests/test_learning.py (500 videos, 4 captions each, 60/10/30 split: 150
   test videos, chance t2v R@1 = 0.67 %) as a shard tree, then `run_export` (pipeline/datasets/export.py);
2. `vtr roles` on the export's ref_captions.json -> a second sent2rolegraph file from the offline
   spaCy backend; the reference's own reader (t2vretrieval.readers.rolegraphs.RoleGraphDataset)
   loads it and the HGR run TRAINS on it;
3. HANet: ``t2vretrieval/driver/multilevel_match.py model.json path.json --load_video_first --is_train
   --resume_file <export>/results/RET.released/word_embeds.glove42b.th`` (exported planted graphs and
   concept labels), then ``--eval_set tst`` (the best-val-rsum checkpoint on the test split);
4. HGR: the same entry point of cshizhe/hgr_v2t, graphs from step 2;
5. the log (reference stdout filtered to readers / epochs / scores, plus a RESULTS line per model
   with the test metrics and chance) to bench/results/reference_on_export-<date>.log.

Model sizes are reduced in model.json (embed 256, the planted 32-d words) so a CPU run takes minutes;
everything else is the reference's MSR-VTT configuration.

Usage: .venv/bin/python scripts/run_reference_on_export.py [--epochs 8] [--work /tmp/vtr-refrun]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

N_VIDEOS, CAPS, SPLITS = 500, 4, (0.6, 0.1, 0.3)
KEEP = re.compile(r"num_videos|captions size|number of resumed|trainable|epoch \(|init val|val:|^rsum|"
                  r"^predefined|^[a-z0-9_\-]*rsum|ir1|Traceback|Error|error", re.I)


def model_json(dim_ft: int, num_words: int, dim_word: int, epochs: int, lr: float, embed: int) -> dict:
    """The reference's MSR-VTT model.json (Roc-Ng/HANet data/msrvtt/model.json) with smaller widths."""
    enc = {"freeze": False, "lr_mult": 1.0, "opt_alg": "Adam", "weight_decay": 0, "gcn_num_layers": 1,
           "gcn_attention": True, "gcn_dropout": 0.5, "dropout": 0.2}
    video = {**enc, "dim_fts": [dim_ft], "dim_embed": embed, "num_levels": 3, "share_enc": False}
    text = {**enc, "num_words": num_words, "dim_word": dim_word, "fix_word_embed": False, "rnn_type": "gru",
            "bidirectional": True, "rnn_hidden_size": embed, "num_layers": 1, "num_roles": 16}
    return {"subcfgs": {"video_encoder": video, "text_encoder": text}, "trn_batch_size": 64,
            "tst_batch_size": 100, "num_epoch": epochs, "val_per_epoch": True, "save_per_epoch": True,
            "val_iter": -1, "save_iter": -1, "monitor_iter": 1000, "summary_iter": 1000, "base_lr": lr,
            "decay_schema": None, "decay_boundarys": [], "decay_rate": 1, "max_frames_in_video": 20,
            "max_words_in_sent": 30, "margin": 0.2, "max_violation": True, "hard_topk": 1,
            "loss_direction": "bi", "num_verbs": 4, "num_nouns": 6, "attn_fusion": "embed",
            "simattn_sigma": 4, "loss_weights": None}


def path_json(export: Path, out_dir: Path, graphs: Path, folder: str, hanet: bool) -> dict:
    """HANet's data/msrvtt/path.json (HGR's prepare_mlmatch_configs.py writes the same keys) for an export."""
    ann = export / "annotation" / "RET"
    cfg = {"output_dir": str(out_dir),
           "attn_ft_files": {s: [str(export / "ordered_feature" / "SA" / folder / f"{s}_ft.hdf5")]
                             for s in ("trn", "val", "tst")},
           "name_file": {s: str(export / "public_split" / f"{s}_names.npy") for s in ("trn", "val", "tst")},
           "word2int_file": str(ann / "word2int.json"), "int2word_file": str(ann / "int2word.npy"),
           "ref_caption_file": {s: str(ann / "ref_captions.json") for s in ("trn", "val", "tst")},
           "ref_graph_file": {s: str(graphs) for s in ("trn", "val", "tst")}}
    if hanet:
        cfg.update({f"{k}_concept_file": str(export / "annotation" / f"{k}_gt.json") for k in ("verb", "noun")})
        cfg.update({f"{k}_concept_all_file": str(export / "annotation" / f"{k}_gt_all.json") for k in ("verb", "noun")})
    return cfg


def run(cmd: list[str], cwd: Path, env: dict, log: list[str], raw: Path) -> str:
    """Run one reference command; full output to ``raw``, filtered lines to ``log``."""
    log.append(f"$ (cd {cwd}) {' '.join(cmd)}")
    t0 = time.time()
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    out = p.stdout + p.stderr
    with open(raw, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n{out}\n")
    log += ["  " + line.strip() for line in out.splitlines() if KEEP.search(line)]
    log.append(f"  exit {p.returncode}, {time.time() - t0:.0f} s")
    if p.returncode:
        raise SystemExit(f"reference command failed ({p.returncode}); full output in {raw}\n" + "\n".join(log[-30:]))
    return out


def test_scores(out: str) -> dict:
    """The header + 'rsum...' row multilevel_match.py prints for the test split."""
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if line.startswith("ir1,") and i + 1 < len(lines):
            names, values = line.split(","), lines[i + 1].split(",")
            return {n: float(v) for n, v in zip(names, values[2:])}
    raise SystemExit("no test scores in the reference output")


def reader_check(python: str, ref: Path, export: Path, graphs: Path, env: dict) -> str:
    """The reference's own role-graph reader on the `vtr roles` file: every test caption's graph arrays."""
    code = f"""
import json, numpy as np
from t2vretrieval.readers.rolegraphs import RoleGraphDataset
a = '{export}/annotation/RET'
d = RoleGraphDataset('{export}/public_split/tst_names.npy', ['{export}/ordered_feature/SA/resnet152.pth/tst_ft.hdf5'],
    a + '/word2int.json', 30, 4, 6, a + '/ref_captions.json', '{graphs}', max_attn_len=20)
outs = [d.get_caption_outs({{}}, s, d.ref_graphs[s]) for s in d.captions]
print(json.dumps({{'captions': len(outs), 'with_verb': int(sum(o['verb_masks'].any() for o in outs)),
    'with_noun': int(sum(o['noun_masks'].any() for o in outs)),
    'edges': int(sum((o['rel_edges'] > 0).sum() for o in outs))}}))
"""
    p = subprocess.run([python, "-c", code], cwd=ref, env=env, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"the reference reader could not load {graphs}:\n{p.stderr[-3000:]}")
    return p.stdout.strip().splitlines()[-1]


def prepare(work: Path, spacy_model: str) -> tuple[Path, dict, Path]:
    """Planted shards -> export -> `vtr roles` graphs. Returns (export, export summary, roles file)."""
    from pipeline.datasets.export import run_export
    from pipeline.datasets.planted import make_planted_shards

    shards = make_planted_shards(work / "shards", n_videos=N_VIDEOS, captions_per_video=CAPS, n_verbs=8,
                                 n_nouns=12, feat_dim=64, n_frames=12, seed=0, split_fractions=SPLITS)
    export = work / "export"
    summary = run_export(shards, export)
    roles = work / "sent2rolegraph.vtr-roles.json"
    subprocess.run([sys.executable, "-m", "flows.cli", "roles", str(export / "annotation/RET/ref_captions.json"),
                    "--out", str(roles), "--spacy-model", spacy_model], cwd=REPO, check=True)
    return export, summary, roles


def train_and_test(name: str, ref: Path, python: str, export: Path, summary: dict, graphs: Path, work: Path,
                   a: argparse.Namespace, log: list[str], env: dict) -> dict:
    c = summary["counts"]
    folder = next(iter(summary["features"].values()))
    cfg_dir = work / f"{name}-configs"
    cfg_dir.mkdir()
    (cfg_dir / "model.json").write_text(json.dumps(model_json(folder["dim"], c["words"], c["embedding_dim"],
                                                              a.epochs, a.lr, a.embed), indent=2))
    (cfg_dir / "path.json").write_text(json.dumps(path_json(export, work / f"{name}-results", graphs,
                                                            folder["folder"], name == "HANet"), indent=2))
    driver = ref / "t2vretrieval" / "driver" / "multilevel_match.py"
    base = [python, str(driver), str(cfg_dir / "model.json"), str(cfg_dir / "path.json"), "--load_video_first",
            "--num_workers", "0"]
    raw = work / f"{name}.out"
    log.append(f"\n== {name} ({ref}), graphs: {graphs.name}")
    run(base + ["--is_train", "--resume_file", str(export / "results/RET.released/word_embeds.glove42b.th")],
        ref / "t2vretrieval" / "driver", env, log, raw)
    scores = test_scores(run(base + ["--eval_set", "tst"], ref / "t2vretrieval" / "driver", env, log, raw))
    log.append(f"-- {name} untrained (its random init + the exported word embeddings), same test split:")
    before = test_scores(run(base + ["--eval_set", "tst", "--resume_file", str(export / "results/RET.released/"
                                                                             "word_embeds.glove42b.th")],
                             ref / "t2vretrieval" / "driver", env, log, raw))
    return {"trained": scores, "untrained": before}


def git_head(path: Path) -> str:
    for cmd in (["git", "-C", str(path), "rev-parse", "HEAD"],):
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode == 0:
            return p.stdout.strip()
    return (path / "REFERENCE_COMMIT").read_text().strip() if (path / "REFERENCE_COMMIT").is_file() else "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hanet", default="/work/refs/HANet")
    ap.add_argument("--hgr", default="/work/refs/hgr_v2t")
    ap.add_argument("--python", default="/work/refs/venv/bin/python", help="interpreter for the reference code")
    ap.add_argument("--work", default="/tmp/vtr-refrun")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--embed", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--spacy-model", default="en_core_web_sm")
    ap.add_argument("--log", default="")
    a = ap.parse_args()
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.time()
    log = [f"# reference code on a `vtr export` of the planted world ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)",
           f"# uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}",
           f"# this repo {git_head(REPO)[:12]}; Roc-Ng/HANet {git_head(Path(a.hanet))[:12]}; "
           f"cshizhe/hgr_v2t {git_head(Path(a.hgr))[:12]} (both unmodified, outside the repo)",
           f"# planted: {N_VIDEOS} videos x {CAPS} captions, split {SPLITS}; epochs {a.epochs}, lr {a.lr}, "
           f"embed {a.embed}, threads {a.threads}; chance on 150 test videos: R@1 0.67, R@5 3.33, R@10 6.67, MedR ~75"]
    export, summary, roles = prepare(work, a.spacy_model)
    log.append(f"# export: {json.dumps(summary['counts'])}")
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    results = {}
    for name, ref, graphs in (("HANet", Path(a.hanet), export / "annotation/RET/sent2rolegraph.augment.json"),
                              ("HGR", Path(a.hgr), roles)):
        renv = {**env, "PYTHONPATH": str(ref)}
        if name == "HGR":
            log.append(f"\n# `vtr roles` file read by the reference's RoleGraphDataset (test split): "
                       f"{reader_check(a.python, ref, export, roles, renv)}")
        results[name] = train_and_test(name, ref, a.python, export, summary, graphs, work, a, log, renv)
    log.append("")
    for name, r in results.items():
        for when, s in r.items():
            t2v = [s.get(k) for k in ("ir1", "ir5", "ir10", "imedr")]
            v2t = [s.get(k) for k in ("cr1", "cr5", "cr10", "cmedr")]
            log.append(f"RESULTS {name} {when} test (150 videos): t2v R@1/5/10 {t2v[:3]} MedR {t2v[3]}; "
                       f"v2t R@1/5/10 {v2t[:3]} MedR {v2t[3]}; rsum {s.get('rsum')} (chance rsum ~21.3)")
    log.append(f"# total {time.time() - t0:.0f} s")
    out = Path(a.log) if a.log else REPO / "bench" / "results" / f"reference_on_export-{datetime.date.today()}.log"
    out.write_text("\n".join(log) + "\n")
    print("\n".join(log[-4:]))
    print(f"log: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
