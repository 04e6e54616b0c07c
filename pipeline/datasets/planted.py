"""Planted-signal synthetic shard trees for tests and benchmarks.

A tiny world of verb and noun concepts. Each video holds ``events_per_video`` events
(subject noun, verb, object noun), each visible on a contiguous window of frames.
Frame feature = sum of the prototype vectors of the concepts visible on that frame
+ a per-video background vector + Gaussian noise. Captions describe one or all events
("a man rides a horse while a dog chases a ball") with role graphs (a V node with
ARG0/ARG1 argument nodes). A retrieval model can only beat chance by learning which
frame directions go with which words, so the signal is planted but not trivial:
several videos can share an event, and captions that mention one event are ambiguous.

The full shard tree is written with the storage writers (videos, captions, features,
feature status, tokens, role graphs, concepts, caption/video labels, words, embeddings,
and ``planted_truth.json`` with each video's concepts and visible windows).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from storage.atomic import atomic_write_text
from storage.features import write_features
from storage.manifest import StageManifest, write_manifest
from storage.tables import write_table

_VERBS = ["ride", "cook", "play", "sing", "dance", "drive", "swim", "throw", "read", "paint", "climb",
          "jump", "kick", "cut", "wash", "feed", "catch", "push", "pull", "carry", "chase", "watch",
          "build", "fix", "open", "hold", "walk", "eat", "drink", "fly"]
_NOUNS = ["man", "woman", "horse", "dog", "car", "guitar", "ball", "boy", "girl", "cat", "bike", "boat",
          "kitchen", "piano", "food", "tree", "table", "baby", "bird", "song", "door", "box", "chair",
          "cake", "phone", "book", "river", "road", "field", "house", "fish", "train", "hat", "game",
          "stage", "crowd", "team", "player", "bottle", "window"]
_FILLERS = [[], [], ["in", "the", "video"], ["outside"], ["on", "camera"], ["slowly"], ["together"]]


def _names(base: list[str], n: int, prefix: str) -> list[str]:
    return base[:n] + [f"{prefix}{i}" for i in range(max(0, n - len(base)))]


def _third_person(v: str) -> str:
    return v + ("es" if v.endswith(("sh", "ch", "s", "x")) else "s")


def write_embeddings_h5(path: Path, emb: np.ndarray) -> Path:
    """text/embeddings.h5 through the text stage's writer (storage.text)."""
    from storage.text import write_embeddings

    return write_embeddings(path, emb, {"source": "planted-random", "dim": int(emb.shape[1])})


def _assign_splits(rng: np.random.Generator, n_videos: int, split_fractions: tuple[float, float, float],
                   twin_fraction: float) -> tuple[list[str], list[bool]]:
    """(split per video, whether each video twins the one before it; a twin shares its split)."""
    n_tr = int(round(split_fractions[0] * n_videos))
    n_va = int(round(split_fractions[1] * n_videos))
    splits = ["train"] * n_tr + ["val"] * n_va + ["test"] * (n_videos - n_tr - n_va)
    splits = list(rng.permutation(splits))
    twin = [i % 2 == 1 and rng.random() < twin_fraction for i in range(n_videos)]
    for i in range(n_videos):
        if twin[i]:
            splits[i] = splits[i - 1]
    return splits, twin


def _plan_events(rng: np.random.Generator, n: int, events_per_video: int, twin: bool, prev: list[dict[str, int]],
                 n_verbs: int, n_nouns: int, separate_events: bool) -> list[dict[str, int]]:
    """The video's events: (verb, subject, object) ids and the frame window each is visible on."""
    events = []
    for e in range(events_per_video):
        if twin:  # same verbs/objects as the previous video, subjects rotated between events
            v, obj = prev[e]["verb"], prev[e]["obj"]
            subj = prev[(e + 1) % events_per_video]["subj"]
        else:
            subj, obj = (int(x) for x in rng.choice(n_nouns, size=2, replace=False))
            v = int(rng.integers(n_verbs))
        if separate_events:
            a, b = (e * n) // events_per_video, max((e * n) // events_per_video + 1, ((e + 1) * n) // events_per_video)
            width = max(1, int(round((b - a) * rng.uniform(0.6, 1.0))))
            start = a + int(rng.integers(0, b - a - width + 1))
        else:
            width = max(1, int(round(n * rng.uniform(0.4, 0.7))))
            start = int(rng.integers(0, n - width + 1))
        events.append({"verb": v, "subj": int(subj), "obj": int(obj), "start": start, "end": start + width})
    return events


def _frame_features(rng: np.random.Generator, n: int, feat_dim: int, events: list[dict[str, int]], vproto, nproto,
                    background: float, noise: float, random_features: bool) -> np.ndarray:
    """(n, feat_dim) frames: background + noise + the prototypes of the concepts visible on each frame."""
    if random_features:
        return rng.standard_normal((n, feat_dim)).astype(np.float32)
    x = (rng.standard_normal(feat_dim).astype(np.float32) * background)[None, :].repeat(n, 0)
    x = x + rng.standard_normal((n, feat_dim)).astype(np.float32) * noise
    for e in events:
        sl = slice(e["start"], e["end"])
        x[sl] += vproto[e["verb"]] + nproto[e["subj"]] + nproto[e["obj"]]
    return x


def _video_rows(key: str, split: str, n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(videos.parquet row, feature status row) of a planted video of ``n`` features."""
    video = {"key": key, "path": f"planted://{key}", "split": split, "size_bytes": 0,
             "n_frames": n * 16, "fps": 25.0, "duration_s": n * 16 / 25.0, "width": 0,
             "height": 0, "status": "ok", "error_message": ""}
    status = {"key": key, "split": split, "shard": "planted", "status": "ok", "error_message": "",
              "n_decoded": n * 16, "n_expected": n * 16, "n_features": n, "fps": 25.0,
              "duration_s": n * 16 / 25.0, "seconds": 0.0}
    return video, status


def _caption(rng: np.random.Generator, events: list[dict[str, int]], events_per_video: int, verbs: list[str],
             nouns: list[str]) -> tuple[dict[str, list], list[str], list[str]]:
    """One caption of some of the events: ({tokens, pos, lemmas, nodes, edges}, its verbs, its nouns)."""
    k = int(rng.integers(1, events_per_video + 1))
    chosen = sorted(rng.choice(events_per_video, size=k, replace=False).tolist())
    tokens, pos, lemmas, nodes, edges = [], [], [], [], []
    cverbs, cnouns = [], []
    for j, ei in enumerate(chosen):
        e = events[ei]
        if j:
            tokens.append("while"); pos.append("IN"); lemmas.append("while")
        base = len(tokens)
        sv, vv, ov = nouns[e["subj"]], verbs[e["verb"]], nouns[e["obj"]]
        tokens += ["a", sv, _third_person(vv), "a", ov]
        pos += ["DT", "NN", "VBZ", "DT", "NN"]
        lemmas += ["a", sv, vv, "a", ov]
        vi = len(nodes)
        nodes += [{"role": "V", "spans": [base + 2], "words": tokens[base + 2]},
                  {"role": "ARG0", "spans": [base, base + 1], "words": f"a {sv}"},
                  {"role": "ARG1", "spans": [base + 3, base + 4], "words": f"a {ov}"}]
        edges += [{"src": vi, "dst": vi + 1, "role": "ARG0"}, {"src": vi, "dst": vi + 2, "role": "ARG1"}]
        cverbs.append(vv)
        cnouns += [sv, ov]
    filler = _FILLERS[int(rng.integers(len(_FILLERS)))]
    tokens += filler
    pos += ["RB"] * len(filler)
    lemmas += filler
    return {"tokens": tokens, "pos": pos, "lemmas": lemmas, "nodes": nodes, "edges": edges}, cverbs, cnouns


def _caption_rows(c: dict[str, list], caption_id: int, key: str, sen_id: int, split: str,
                  failed: bool) -> tuple[dict, dict, dict]:
    """(captions, tokens, role_graphs) rows of one planted caption."""
    tokens = c["tokens"]
    cap = {"caption_id": caption_id, "key": key, "sen_id": sen_id, "split": split, "caption": " ".join(tokens)}
    tok = {"caption_id": caption_id, "key": key, "split": split, "status": "ok",
           "error_message": "", "tokens": tokens, "pos": c["pos"], "lemmas": c["lemmas"]}
    graph = {"caption_id": caption_id, "key": key, "split": split,
             "status": "failed" if failed else "ok",
             "error_message": "planted failure" if failed else "", "backend": "planted",
             "tokens": tokens, "nodes": [] if failed else c["nodes"],
             "edges": [] if failed else c["edges"], "fallback": False}
    return cap, tok, graph


def _concept_tables(label_rows: list[tuple]) -> tuple[list[dict], list[dict], list[dict]]:
    """(concepts, caption_labels, video_labels) rows; the concept vocabularies come from TRAIN captions only
    (count desc, then lemma)."""
    vc, nc = Counter(), Counter()
    for _, _, split, cv, cn in label_rows:
        if split == "train":
            vc.update(set(cv))
            nc.update(set(cn))
    vocab_v = sorted(vc, key=lambda w: (-vc[w], w))
    vocab_n = sorted(nc, key=lambda w: (-nc[w], w))
    vid_of = {w: i for i, w in enumerate(vocab_v)}
    nid_of = {w: i for i, w in enumerate(vocab_n)}
    concept_rows = ([{"kind": "verb", "concept_id": i, "lemma": w, "train_count": vc[w]} for i, w in enumerate(vocab_v)]
                    + [{"kind": "noun", "concept_id": i, "lemma": w, "train_count": nc[w]}
                       for i, w in enumerate(vocab_n)])
    cap_label_rows = []
    vid_union: dict[str, tuple[set[int], set[int], str]] = {}
    for cid, key, split, cv, cn in label_rows:
        vi = sorted({vid_of[w] for w in cv if w in vid_of})
        ni = sorted({nid_of[w] for w in cn if w in nid_of})
        cap_label_rows.append({"caption_id": cid, "key": key, "split": split, "verb_ids": vi, "noun_ids": ni})
        u = vid_union.setdefault(key, (set(), set(), split))
        u[0].update(vi)
        u[1].update(ni)
    video_label_rows = [{"key": k, "split": s, "verb_ids": sorted(a), "noun_ids": sorted(b)}
                        for k, (a, b, s) in vid_union.items()]
    return concept_rows, cap_label_rows, video_label_rows


def _word_rows(cap_rows: list[dict], graph_rows: list[dict]) -> list[dict]:
    """Word vocabulary from train captions: <bos>, <eos>, <unk>, then by count."""
    wc = Counter(t for r, g in zip(cap_rows, graph_rows) if r["split"] == "train" for t in g["tokens"])
    words = ["<bos>", "<eos>", "<unk>"] + sorted(wc, key=lambda w: (-wc[w], w))
    return [{"word_id": i, "word": w, "train_count": wc.get(w, 0), "in_embeddings": True}
            for i, w in enumerate(words)]


def _write_tree(root: Path, tables: dict[str, list], feats: dict[str, dict[str, np.ndarray]], extractor: str,
                seed: int, emb: np.ndarray, truth: dict[str, Any]) -> None:
    """Every file of the shard tree, through the storage writers."""
    write_table(root / "videos.parquet", "videos", tables["videos"])
    write_table(root / "captions.parquet", "captions", tables["captions"])
    fdir = root / "features" / extractor
    for split, fs in feats.items():
        if fs:
            write_features(fdir / f"{split}.h5", fs, {"extractor": extractor, "weights": "planted",
                                                      "weights_sha256": "", "config": {"seed": seed}})
    write_table(fdir / "status.parquet", "feature_status", tables["feature_status"])
    text = root / "text"
    for name in ("tokens", "role_graphs", "concepts", "caption_labels", "video_labels", "words"):
        write_table(text / f"{name}.parquet", name, tables[name])
    write_embeddings_h5(text / "embeddings.h5", emb)
    atomic_write_text(root / "planted_truth.json", json.dumps(truth, indent=1))


def make_planted_shards(root: str | os.PathLike, n_videos: int = 60, captions_per_video: int = 5,
                        n_verbs: int = 8, n_nouns: int = 12, feat_dim: int = 64, n_frames: int = 12,
                        seed: int = 0, *, word_dim: int = 32, events_per_video: int = 2,
                        noise: float = 1.0, background: float = 1.0, proto_scale: float = 1.0,
                        split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
                        extractor: str = "resnet152", frame_jitter: float = 0.5,
                        failed_graph_fraction: float = 0.03, random_features: bool = False,
                        twin_fraction: float = 0.0, separate_events: bool = False) -> Path:
    """Write a complete planted shard tree under ``root`` and return ``root``.

    ``n_frames`` is the typical frame count; with ``frame_jitter`` > 0 videos have
    between n_frames*(1-j) and n_frames*(1+j) frames (so both subsampling and padding
    happen with max_frames = n_frames). ``random_features`` skips the planted signal
    (pure noise features, for benchmarks that only need shapes).
    """
    params = {k: v for k, v in locals().items() if k != "root"}
    root, rng = Path(root), np.random.default_rng(seed)
    verbs, nouns = _names(_VERBS, n_verbs, "verb"), _names(_NOUNS, n_nouns, "thing")
    vproto = rng.standard_normal((n_verbs, feat_dim)).astype(np.float32) * proto_scale
    nproto = rng.standard_normal((n_nouns, feat_dim)).astype(np.float32) * proto_scale
    keys = [f"video{i}" for i in range(n_videos)]
    splits, twin = _assign_splits(rng, n_videos, split_fractions, twin_fraction)
    truth: dict[str, Any] = {}
    feats: dict[str, dict[str, np.ndarray]] = {"train": {}, "val": {}, "test": {}}
    tables: dict[str, list] = {k: [] for k in ("videos", "feature_status", "captions", "tokens", "role_graphs")}
    label_rows, events = [], []
    for vi, (key, split) in enumerate(zip(keys, splits)):
        lo, hi = max(1, int(n_frames * (1 - frame_jitter))), max(1, int(n_frames * (1 + frame_jitter)))
        n = int(rng.integers(lo, hi + 1))
        events = _plan_events(rng, n, events_per_video, twin[vi], events, n_verbs, n_nouns, separate_events)
        feats[split][key] = _frame_features(rng, n, feat_dim, events, vproto, nproto, background, noise,
                                            random_features)
        truth[key] = {"split": split, "n_frames": n, "twin_of": keys[vi - 1] if twin[vi] else None, "events": [
            {"verb": verbs[e["verb"]], "subject": nouns[e["subj"]], "object": nouns[e["obj"]],
             "frames": [e["start"], e["end"]]} for e in events]}
        for name, row in zip(("videos", "feature_status"), _video_rows(key, split, n)):
            tables[name].append(row)
        for s in range(captions_per_video):
            c, cverbs, cnouns = _caption(rng, events, events_per_video, verbs, nouns)
            failed = rng.random() < failed_graph_fraction
            caption_id = len(tables["captions"])
            for name, row in zip(("captions", "tokens", "role_graphs"),
                                 _caption_rows(c, caption_id, key, s, split, failed)):
                tables[name].append(row)
            label_rows.append((caption_id, key, split, cverbs, cnouns))
    tables["concepts"], tables["caption_labels"], tables["video_labels"] = _concept_tables(label_rows)
    tables["words"] = _word_rows(tables["captions"], tables["role_graphs"])
    emb = rng.standard_normal((len(tables["words"]), word_dim)).astype(np.float32) * 0.3
    _write_tree(root, tables, feats, extractor, seed, emb, truth)
    params["split_fractions"] = list(split_fractions)
    write_manifest(root, StageManifest(stage="planted", key=json.dumps(params, sort_keys=True), config=params,
                                       counts={"videos": n_videos, "captions": len(tables["captions"])}))
    return root
