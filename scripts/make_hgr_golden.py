#!/usr/bin/env python
"""Write the HGR golden-parity fixture (tests/fixtures/hgr_golden/) by running the reference code.

NOT run by CI. It runs cshizhe/hgr_v2t UNMODIFIED on CPU (checkout outside this repo, default
/work/refs/hgr_v2t; fetch it with `git clone https://github.com/cshizhe/hgr_v2t`), on a small
seeded model whose every tensor is perturbed (so no parameter sits at an init value that could
hide a mapping mistake), and saves:

* ``reference.th``   - the perturbed model, written by the reference's own
  ``ModelBase.save_checkpoint`` (what users of the reference have on disk);
* ``inputs.npz``     - the video batch (attn_fts, attn_lens) and every caption's graph inputs
  (sent_ids, sent_lens, verb_masks, noun_masks, node_roles, rel_edges), produced by the
  reference's own reader (RoleGraphDataset / collate_graph_fn) from synthetic captions + role
  graphs written in its file formats;
* ``outputs.npz``    - the reference's sentence / verb / noun score matrices for both attention
  fusions ('embed', 'sim'), the fused matrix and a training-batch loss (forward_loss);
* ``golden.json``    - reference config, metrics (ModelBase.evaluate), caption order, the
  reference's role order, the reference commit id, torch/numpy versions.

Usage:  .venv/bin/python scripts/make_hgr_golden.py [--ref /work/refs/hgr_v2t] [--out tests/fixtures/hgr_golden]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch

DIMS = dict(dim_fts=24, dim_embed=32, dim_word=16, num_words=50, max_words=12, max_frames=8,
            num_verbs=4, num_nouns=6, gcn_num_layers=2)
VIDEO_LENGTHS = [5, 12, 3, 8, 1, 10]      # > max_frames: the reader subsamples ('select')
CAPTIONS_PER_VIDEO = 2


def synthetic_captions(rng: np.random.Generator) -> tuple[dict, dict]:
    """ref_captions {video: [sent]} and ref_graphs {sent: [nodes, edges]} in the reference's formats."""
    words = [f"w{i}" for i in range(DIMS["num_words"] - 6)] + ["zzunk"]  # one word outside the vocabulary
    caps, graphs = {}, {}
    for v in range(len(VIDEO_LENGTHS)):
        caps[f"video{v}"] = []
        for c in range(CAPTIONS_PER_VIDEO):
            n = int(rng.integers(3, 15))                # some longer than max_words (trimmed)
            toks = [str(rng.choice(words)) for _ in range(n)] + [f"v{v}c{c}"]
            sent = " ".join(toks)
            nodes, edges = {}, []
            n_verbs = int(rng.integers(0, 4))
            if v == 0 and c == 0:
                n_verbs = 6                              # more verbs than num_verbs slots
            verbs = []
            for k in range(n_verbs):
                key = f"v{k}"
                nodes[key] = {"role": "V", "spans": [int(rng.integers(0, len(toks)))]}
                verbs.append(key)
            roles = ["ARG0", "ARG1", "ARG2", "ARGM-LOC", "ARGM-TMP", "C-ARG1", "R-ARG0", "NOUN", "ARGM-XYZ"]
            for k in range(int(rng.integers(0, 9))):
                key = f"a{k}"
                start = int(rng.integers(0, len(toks)))
                nodes[key] = {"role": str(rng.choice(roles)), "spans": list(range(start, min(len(toks), start + 3)))}
                if verbs and rng.random() < 0.8:
                    edges.append([str(rng.choice(verbs)), key])
            caps[f"video{v}"].append(sent)
            graphs[sent] = [nodes, edges]
    return caps, graphs


def main(argv=None) -> int:
    if os.environ.get("PYTHONHASHSEED") != "0":  # the reader orders captions through a set(): fix str hashing
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", default="/work/refs/hgr_v2t")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests/fixtures/hgr_golden"))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    ref, out = Path(a.ref).resolve(), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "-C", str(ref), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    sys.path.insert(0, str(ref))
    from t2vretrieval.models.mlmatch import TXTENC, VISENC, RoleGraphMatchModel, RoleGraphMatchModelConfig
    from t2vretrieval.readers.rolegraphs import ROLES, RoleGraphDataset, collate_graph_fn

    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)

    # ---- config: the reference run's settings (prepare_mlmatch_configs.py), small widths
    cfg = RoleGraphMatchModelConfig()
    cfg.max_frames_in_video = DIMS["max_frames"]
    cfg.max_words_in_sent = DIMS["max_words"]
    cfg.num_verbs, cfg.num_nouns = DIMS["num_verbs"], DIMS["num_nouns"]
    cfg.attn_fusion, cfg.simattn_sigma, cfg.margin = "embed", 4, 0.2
    cfg.max_violation, cfg.hard_topk, cfg.loss_weights, cfg.loss_direction = True, 1, None, "bi"
    cfg.tst_batch_size = 5                               # several caption blocks in evaluate_scores
    v = cfg.subcfgs[VISENC]
    v.dim_fts, v.dim_embed, v.dropout, v.share_enc, v.num_levels = [DIMS["dim_fts"]], DIMS["dim_embed"], 0.2, False, 3
    t = cfg.subcfgs[TXTENC]
    t.num_words, t.dim_word, t.fix_word_embed = DIMS["num_words"], DIMS["dim_word"], False
    t.rnn_hidden_size, t.num_layers, t.rnn_type, t.bidirectional, t.dropout = DIMS["dim_embed"], 1, "gru", True, 0.2
    t.num_roles = len(ROLES)
    t.gcn_num_layers, t.gcn_attention, t.gcn_dropout = DIMS["gcn_num_layers"], True, 0.5

    model = RoleGraphMatchModel(cfg, _logger=None)
    # ---- perturb every tensor (weights, biases, LayerNorm, GRU biases, embeddings)
    with torch.no_grad():
        for sub in model.submods.values():
            for name, p in sub.state_dict().items():
                p.add_(torch.randn_like(p) * (0.1 + 0.1 * p.float().std().nan_to_num()))
    model.save_checkpoint(str(out / "reference.th"))

    # ---- data through the reference's reader, from files in its formats
    caps, graphs = synthetic_captions(rng)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        names = np.array(list(caps))
        np.save(tmp / "names.npy", names)
        with h5py.File(tmp / "fts.hdf5", "w") as f:
            for name, n in zip(names, VIDEO_LENGTHS):
                f[name] = rng.standard_normal((n, DIMS["dim_fts"])).astype(np.float32)
        vocab = {f"w{i}": i + 3 for i in range(DIMS["num_words"] - 3)}
        (tmp / "word2int.json").write_text(json.dumps(vocab))
        (tmp / "caps.json").write_text(json.dumps(caps))
        (tmp / "graphs.json").write_text(json.dumps(graphs))
        ds = RoleGraphDataset(str(tmp / "names.npy"), [str(tmp / "fts.hdf5")], str(tmp / "word2int.json"),
                              DIMS["max_words"], DIMS["num_verbs"], DIMS["num_nouns"], str(tmp / "caps.json"),
                              str(tmp / "graphs.json"), max_attn_len=DIMS["max_frames"], load_video_first=True,
                              is_train=False)
        reader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False, collate_fn=collate_graph_fn)

        model.eval_start()
        metrics, outs = model.evaluate(reader, return_outs=True)
        scores_embed = outs["scores"]                      # (3, n_videos, n_captions)
        cfg.attn_fusion = "sim"
        _, outs_sim = model.evaluate(reader, return_outs=True)
        cfg.attn_fusion = "embed"
        cap_names = list(outs["cap_names"])
        vid_names = list(outs["vid_names"])
        video = collate_graph_fn([ds[i] for i in range(len(ds))])
        text = collate_graph_fn([ds.get_caption_outs({}, s, ds.ref_graphs[s]) for s in cap_names])
        # a training batch: video i with its first caption (eval mode: no dropout)
        first = [cap_names.index(caps[n][0]) for n in vid_names]
        batch = collate_graph_fn([{**ds[i], **ds.get_caption_outs({}, cap_names[j], ds.ref_graphs[cap_names[j]])}
                                  for i, j in enumerate(first)])
        loss = float(model.forward_loss(batch))

    cap2vid = np.array([vid_names.index(next(n for n in vid_names if s in caps[n])) for s in cap_names])
    np.savez_compressed(out / "inputs.npz", attn_fts=video["attn_fts"].astype(np.float32),
                        attn_lens=np.array(video["attn_lens"], np.int64),
                        sent_ids=np.array(text["sent_ids"], np.int64), sent_lens=np.array(text["sent_lens"], np.int64),
                        verb_masks=np.array(text["verb_masks"], bool), noun_masks=np.array(text["noun_masks"], bool),
                        node_roles=np.array(text["node_roles"], np.int64),
                        rel_edges=np.array(text["rel_edges"], np.float32), cap2vid=cap2vid,
                        loss_caption_index=np.array(first, np.int64))
    np.savez_compressed(out / "outputs.npz", sent_embed=scores_embed[0], verb_embed=scores_embed[1],
                        noun_embed=scores_embed[2], fused_embed=scores_embed.mean(0),
                        sent_sim=outs_sim["scores"][0], verb_sim=outs_sim["scores"][1], noun_sim=outs_sim["scores"][2],
                        fused_sim=outs_sim["scores"].mean(0), loss=np.array(loss))
    golden = {
        "reference": "https://github.com/cshizhe/hgr_v2t", "commit": commit,
        "made_by": "scripts/make_hgr_golden.py", "seed": a.seed, "dims": DIMS,
        "reference_roles": list(ROLES), "video_names": vid_names, "captions": cap_names,
        "metrics_embed": {k: float(x) for k, x in metrics.items()},
        "config": {"visual": v.save_to_dict(), "text": t.save_to_dict(), "attn_fusion": "embed",
                   "simattn_sigma": cfg.simattn_sigma, "margin": cfg.margin},
        "torch": torch.__version__, "numpy": np.__version__,
    }
    (out / "golden.json").write_text(json.dumps(golden, indent=1))
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out} ({size / 1024:.0f} KiB); reference {commit}; metrics {golden['metrics_embed']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
