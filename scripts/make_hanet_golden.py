"""Golden parity fixture made by the reference code itself (Roc-Ng/HANet). Not run by CI.

    python scripts/make_hanet_golden.py --ref /work/refs/HANet [--out tests/fixtures/hanet_golden]

``--ref`` is a checkout of https://github.com/Roc-Ng/HANet (commit e679703; the GloVe blob
is not needed). The reference's modules are imported from there and run unmodified; this
script only configures them:

* a SMALL model: frame features 48-d, embed dim 64, word dim 32, 200 words, dropouts 0
  (so one training-mode forward is deterministic), attention GCN; the reference hard-codes
  512 / 1024 concepts in its encoders, so after construction its concept heads
  (``bn_verb``/``classifier_verb``/``bn_noun``/``classifier_noun``, same module structure and
  state-dict names) are replaced by 32-verb / 64-noun ones;
* every tensor of the state dict (BN running statistics, GRU biases, LayerNorm, the unused
  conv1/conv2/fc included) gets seeded noise, so a wrong mapping cannot hide behind a
  default initialisation; the checkpoint is written by the reference's own
  ``ModelBase.save_checkpoint``;
* inputs: 16 videos of 1, 2, 3, 5, ... 10 frames, 60 captions (1 to 33 words, unknown words,
  role graphs with more verbs / arguments than the caps, arguments without a verb, captions
  without any node); graphs are turned into masks / roles / edges by the reference reader's
  ``RoleGraphDataset.get_caption_outs`` and batches by its ``collate_graph_fn``;
* outputs: the seven per-level score matrices (``generate_scores``), the fused score and the
  metrics exactly as ``RoleGraphMatchModel.evaluate`` computes them, and one training-mode
  ``forward_loss`` with the gradient of every parameter (concept labels / masks built with
  the reader's rule: mask 0 on the video's other captions' concepts, 1 on this caption's).

Files: ref_checkpoint.th, int2word.npy, word2int.json, inputs.json, inputs.npz (frame
features), golden.npz (matrices, fused, gradients, encoder outputs), golden.json (metrics,
loss, model config, reference commit).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

N_VIDEOS, FEAT_DIM, EMBED, WORD_DIM, N_WORDS = 16, 48, 64, 32, 200
N_VERB_C, N_NOUN_C = 32, 64
LENGTHS = [1, 2, 3, 5, 10, 10, 7, 4, 10, 6, 8, 9, 10, 3, 2, 10]
REF_COMMIT = "e679703"
ROLE_POOL = ["ARG0", "ARG1", "ARG2", "ARGM-LOC", "ARGM-TMP", "ARGM-MNR", "C-ARG1", "R-ARG0", "ARGM-XYZ", "NOUN"]


def ref_commit(ref: Path, given: str | None) -> str:
    """--commit, else the checkout's HEAD (only if ``ref`` itself is a git work tree), else e679703."""
    if given:
        return given
    if (ref / ".git").exists():
        try:
            return subprocess.run(["git", "-C", str(ref), "rev-parse", "HEAD"], capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            pass
    return REF_COMMIT


def make_vocab() -> list[str]:
    return ["<BOS>", "<EOS>", "<UNK>"] + [f"w{i:03d}" for i in range(3, N_WORDS)]


def make_captions(rng: np.random.Generator, words: list[str]):
    """60 captions: (video, text, graph (nodes dict, edges list), verb concepts, noun concepts)."""
    cap2vid = [i % N_VIDEOS for i in range(60)]
    caps = []
    lengths = list(rng.integers(2, 16, size=60))
    lengths[0], lengths[1], lengths[2], lengths[3] = 1, 30, 33, 2
    for j, v in enumerate(cap2vid):
        n = int(lengths[j])
        toks = [words[int(rng.integers(3, N_WORDS))] for _ in range(n)]
        for t in range(n):  # some out-of-vocabulary words (-> UNK)
            if rng.random() < 0.06:
                toks[t] = f"oov{int(rng.integers(0, 50))}"
        text = " ".join(toks) + f" c{j}" if n < 30 else " ".join(toks)  # unique captions
        nw = min(len(text.split()), 30)
        nodes: dict[str, dict] = {}
        edges: list[list] = []
        kind = j % 6
        if kind != 0 and nw >= 2:  # kind 0: no nodes at all (empty verb and noun slots)
            n_verbs = {1: 1, 2: 2, 3: 5, 4: 0, 5: 3}[kind]
            n_args = int(rng.integers(1, 9)) if kind != 5 else 7
            pos = list(rng.permutation(nw))
            k = 0
            verb_keys = []
            for a in range(n_verbs):
                key = f"n{k}"; k += 1
                nodes[key] = {"role": "V", "spans": [int(pos[a % nw])], "words": ""}
                verb_keys.append(key)
            for a in range(n_args):
                start = int(rng.integers(0, nw))
                span = list(range(start, min(nw, start + int(rng.integers(1, 4)))))
                key = f"n{k}"; k += 1
                nodes[key] = {"role": ROLE_POOL[int(rng.integers(0, len(ROLE_POOL)))], "spans": span, "words": ""}
                if verb_keys and rng.random() < 0.8:  # some arguments hang off no verb
                    for vk in rng.choice(verb_keys, size=min(len(verb_keys), int(rng.integers(1, 3))),
                                         replace=False):
                        edges.append([str(vk), key, nodes[key]["role"]])
            # interleave: shuffle node order (verbs are not always first)
            order = list(nodes)
            rng.shuffle(order)
            nodes = {key: nodes[key] for key in order}
        vc = sorted(set(int(x) for x in rng.choice(N_VERB_C, size=int(rng.integers(0, 4)), replace=False)))
        nc = sorted(set(int(x) for x in rng.choice(N_NOUN_C, size=int(rng.integers(1, 5)), replace=False)))
        caps.append({"video": v, "text": text, "nodes": nodes, "edges": edges, "verbs": vc, "nouns": nc})
    return caps


def perturb_(submods: dict, gen: torch.Generator) -> None:
    with torch.no_grad():
        for key in sorted(submods):
            for name, t in sorted(submods[key].state_dict().items()):
                if not t.is_floating_point():
                    continue
                if name.endswith("running_var"):
                    t.copy_(0.5 + torch.rand(t.shape, generator=gen))
                elif name.endswith("running_mean"):
                    t.copy_(0.2 * torch.randn(t.shape, generator=gen))
                else:
                    scale = 0.1 * float(t.std()) if t.numel() > 1 and float(t.std()) > 0 else 0.1
                    t.add_(max(scale, 0.02) * torch.randn(t.shape, generator=gen))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", required=True, help="checkout of Roc-Ng/HANet")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests/fixtures/hanet_golden"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--commit", default=None, help="the reference commit of --ref (files extracted with git show)")
    args = ap.parse_args(argv)
    ref, out = Path(args.ref).resolve(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ref))
    import t2vretrieval.models.mlmatch as mlmatch  # noqa: E402  (the reference code)
    import t2vretrieval.readers.rolegraphs as rolegraphs  # noqa: E402

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)

    cfg = mlmatch.RoleGraphMatchModelConfig()
    vcfg, tcfg = cfg.subcfgs["video_encoder"], cfg.subcfgs["text_encoder"]
    vcfg.load_from_dict({"dim_fts": [FEAT_DIM], "dim_embed": EMBED, "dropout": 0.0, "num_levels": 3,
                         "share_enc": False})
    tcfg.load_from_dict({"num_words": N_WORDS, "dim_word": WORD_DIM, "fix_word_embed": False, "rnn_type": "gru",
                         "bidirectional": True, "rnn_hidden_size": EMBED, "num_layers": 1, "dropout": 0.0,
                         "num_roles": 16, "gcn_num_layers": 1, "gcn_attention": True, "gcn_dropout": 0.0})
    for k, v in {"trn_batch_size": 12, "tst_batch_size": 300, "max_frames_in_video": 10, "max_words_in_sent": 30,
                 "margin": 0.2, "max_violation": True, "hard_topk": 1, "loss_direction": "bi", "num_verbs": 4,
                 "num_nouns": 6, "attn_fusion": "embed", "simattn_sigma": 4, "loss_weights": None,
                 "monitor_iter": -1}.items():
        setattr(cfg, k, v)
    with contextlib.redirect_stdout(io.StringIO()):
        model = mlmatch.RoleGraphMatchModel(cfg)
    venc, tenc = model.submods["video_encoder"], model.submods["text_encoder"]
    # smaller concept vocabularies (the reference hard-codes 512 / 1024): same structure and names
    for enc, kv in ((venc, 5), (tenc, 1)):
        enc.bn_verb = nn.BatchNorm1d(N_VERB_C)
        enc.bn_noun = nn.BatchNorm1d(N_NOUN_C)
        enc.classifier_verb = nn.Sequential(nn.Conv1d(EMBED, N_VERB_C, kv, stride=1, padding=kv // 2),
                                            enc.bn_verb, nn.Sigmoid())
        enc.classifier_noun = nn.Sequential(nn.Conv1d(EMBED, N_NOUN_C, 1), enc.bn_noun, nn.Sigmoid())
    perturb_(model.submods, gen)
    model.save_checkpoint(str(out / "ref_checkpoint.th"))  # the reference's own save code

    words = make_vocab()
    np.save(out / "int2word.npy", np.array(words))
    word2int = {w: i for i, w in enumerate(words)}
    (out / "word2int.json").write_text(json.dumps(word2int))

    # --- inputs
    feats = np.zeros((N_VIDEOS, max(LENGTHS), FEAT_DIM), np.float32)
    for i, n in enumerate(LENGTHS):
        feats[i, :n] = rng.normal(0, 1, size=(n, FEAT_DIM)).astype(np.float32) * (1 + 0.5 * rng.random())
    caps = make_captions(rng, words)
    reader = rolegraphs.RoleGraphDataset.__new__(rolegraphs.RoleGraphDataset)  # only its caption code
    reader.max_words_in_sent, reader.num_verbs, reader.num_nouns = 30, cfg.num_verbs, cfg.num_nouns
    reader.word2int = word2int
    reader.role2int = {}
    for i, role in enumerate(rolegraphs.ROLES):
        reader.role2int[role] = reader.role2int["C-%s" % role] = reader.role2int["R-%s" % role] = i
    cap_outs = [reader.get_caption_outs({}, c["text"], (c["nodes"], c["edges"])) for c in caps]

    def video_data(idx):
        lens = np.array([LENGTHS[i] for i in idx])
        return {"attn_fts": feats[idx][:, :lens.max()], "attn_lens": lens}

    def caption_data(idx):
        return rolegraphs.collate_graph_fn([cap_outs[j] for j in idx])

    # --- evaluation (RoleGraphMatchModel.evaluate, on one 16-video block and one caption batch)
    model.eval_start()
    vid = model.forward_video_embed(video_data(list(range(N_VIDEOS))))
    cap_batch = caption_data(list(range(len(caps))))
    txt = model.forward_text_embed(cap_batch)
    txt.update(vid)
    scores = np.array([s.data.cpu().numpy() for s in model.generate_scores(**txt)])  # (7, V, C)
    fused = (np.mean(scores[[0, 1, 2, 5, 6]], 0) + np.mean(scores[3:5], 0)) / 2
    i2t = [[j for j, c in enumerate(caps) if c["video"] == v] for v in range(N_VIDEOS)]
    t2i = {j: [c["video"]] for j, c in enumerate(caps)}
    metrics = {k: float(v) for k, v in model.calculate_metrics(fused, i2t, t2i).items()}

    # --- one training-mode loss + gradients (12 pairs of distinct videos)
    pairs = [(v, [j for j, c in enumerate(caps) if c["video"] == v][v % 3]) for v in
             [0, 1, 2, 3, 4, 6, 7, 9, 10, 12, 13, 15]]
    batch = video_data([v for v, _ in pairs])
    batch.update(caption_data([j for _, j in pairs]))
    for kind, n in (("verb", N_VERB_C), ("noun", N_NOUN_C)):
        labels, masks = [], []
        for v, j in pairs:
            lab = np.zeros(n); lab[caps[j][kind + "s"]] = 1
            mask = np.ones(n)
            for jj, c in enumerate(caps):
                if c["video"] == v:
                    mask[c[kind + "s"]] = 0
            mask[caps[j][kind + "s"]] = 1
            labels.append(lab); masks.append(mask)
        batch[f"{kind}_concept_label"], batch[f"{kind}_concept_mask"] = labels, masks
    model.train_start()
    for p in model.params:
        p.grad = None
    loss = model.forward_loss(batch)
    loss.backward()
    grads = {}
    for key in ("video_encoder", "text_encoder"):
        for name, p in model.submods[key].named_parameters():
            grads[f"grad/{key}.{name}"] = (p.grad if p.grad is not None else torch.zeros_like(p)).numpy()

    names = ["glo", "loc_a", "loc_e", "jac_a", "jac_e", "ind_a", "ind_e"]  # generate_scores order
    np.savez_compressed(out / "inputs.npz", feats=feats, lengths=np.array(LENGTHS))
    np.savez_compressed(out / "golden.npz", fused=fused.astype(np.float32),
                        **{f"score/{n}": scores[i].astype(np.float32) for i, n in enumerate(names)},
                        **{k: v.astype(np.float32) for k, v in grads.items()},
                        sent_ids=np.asarray(cap_batch["sent_ids"]), sent_lens=np.asarray(cap_batch["sent_lens"]),
                        verb_masks=np.asarray(cap_batch["verb_masks"]), noun_masks=np.asarray(cap_batch["noun_masks"]),
                        node_roles=np.asarray(cap_batch["node_roles"]),
                        rel_edges=np.asarray(cap_batch["rel_edges"], np.float32),
                        video_verb_probs=vid["logits"][0].numpy(), video_noun_probs=vid["logits"][1].numpy())
    (out / "inputs.json").write_text(json.dumps({
        "captions": caps, "train_pairs": pairs, "words_note": "word ids of int2word.npy; specials 0,1,2"}))
    (out / "golden.json").write_text(json.dumps({
        "reference": "https://github.com/Roc-Ng/HANet", "reference_commit": ref_commit(ref, args.commit),
        "score_order": names, "metrics": metrics, "train_loss": float(loss.item()),
        "model": {"feat_dim": FEAT_DIM, "joint_dim": EMBED, "word_dim": WORD_DIM, "vocab_size": N_WORDS,
                  "n_verb_concepts": N_VERB_C, "n_noun_concepts": N_NOUN_C, "gcn_attn_dim": EMBED // 2,
                  "max_frames": max(LENGTHS), "dropouts": 0.0},
        "made_by": "scripts/make_hanet_golden.py", "seed": args.seed, "torch": torch.__version__,
    }, indent=2))
    print(json.dumps({"metrics": metrics, "loss": float(loss.item())}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
