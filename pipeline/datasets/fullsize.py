"""Full-size synthetic datasets in the released bundle layout (``format=hgr-bundle``), for rehearsals.

``write_fullsize_bundle(root, 'msrvtt', scale=1.0)`` writes what HGR released for MSR-VTT, at its
real sizes: 10,000 videos (6,513 / 497 / 2,990), 20 captions each (~9.3 words), a vocabulary of
the order of 10k words, ResNet152 features (2048-d, 10-40 frames per video); ``'vatex'``: 25,991 /
1,500 / 1,500 videos, 10 captions each (~15 words), I3D features (1024-d, 16-32 frames). ``scale``
(1/8, 1/4, 1/2, 1 ...) multiplies the video counts (captions per video, lengths and widths stay).
Files: layout in :mod:`storage.bundle`, written by :mod:`storage.bundle_write` (its streamed writers), including HGR's
role graphs (``sent2rolegraph.augment.json``: ROOT + V + ARG0 + ARG1 [+ ARGM-LOC] per caption)
and its vocabulary (``int2word.npy`` / ``word2int.json``: BOS/EOS/UNK then train words by count).

Planted signal (as :mod:`pipeline.datasets.planted`): each video holds ``events`` (verb, subject,
object) drawn from a concept world, each visible on a window of frames; a frame = background +
noise + the prototypes of the concepts visible on it. A caption names one event ("a man rides a
horse"), optionally a place, and filler words drawn from a Zipf lexicon (the long tail that gives
the vocabulary its size). So retrieval beats chance only by learning words <-> frame directions.

Deterministic and chunked: video ``i`` of a split is generated from its own seed
``(seed, split, i)`` and written at once (features to HDF5, captions and graphs to the streamed
JSON files); only the concept prototypes, the lexicon and the word counts stay in memory.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from storage import bundle_write as bw

_VERBS = ["ride", "cook", "play", "sing", "dance", "drive", "swim", "throw", "read", "paint", "climb", "jump",
          "kick", "cut", "wash", "feed", "catch", "push", "pull", "carry", "chase", "watch", "build", "fix",
          "open", "hold", "walk", "eat", "drink", "fly", "talk", "run", "show", "clean", "draw", "fold",
          "hit", "lift", "mix", "pour", "shoot", "stir", "touch", "type", "wave", "write", "explain", "ski"]
_NOUNS = ["man", "woman", "horse", "dog", "car", "guitar", "ball", "boy", "girl", "cat", "bike", "boat",
          "kitchen", "piano", "food", "tree", "table", "baby", "bird", "song", "door", "box", "chair", "cake",
          "phone", "book", "river", "road", "field", "house", "fish", "train", "hat", "game", "stage", "crowd",
          "team", "player", "bottle", "window", "computer", "camera", "paper", "shirt", "truck", "plane", "bowl",
          "knife", "wall", "street", "beach", "snow", "water", "student", "teacher", "doctor", "chef", "singer",
          "robot", "puppy", "horse", "toy", "pan", "egg", "rope", "bed", "cup", "goal", "wheel", "screen"]
_PLACES = ["park", "room", "studio", "garden", "gym", "lake", "mall", "office", "forest", "court", "pool", "city"]
_SYLLABLES = ["ka", "lo", "mi", "ra", "te", "su", "no", "vi", "pe", "da", "go", "ri", "ze", "ba", "fu", "lan",
              "mor", "tis", "quen", "dal", "vor", "sel", "pim", "gor", "hul", "rek", "bin", "tas", "wen", "zul"]


@dataclass(frozen=True)
class Spec:
    """One dataset's real shape (counts at scale 1)."""

    name: str
    split_videos: tuple[int, int, int]      # train, val, test
    captions_per_video: int
    mean_words: float                       # caption length (words) on average
    lexicon: int                            # filler words (the vocabulary's long tail)
    feature_folder: str                     # under ordered_feature/SA (the name the release uses)
    dim: int
    frames: tuple[int, int]                 # features per video, inclusive range
    n_verbs: int = 48
    n_nouns: int = 70
    events: int = 2


SPECS = {
    "msrvtt": Spec("msrvtt", (6513, 497, 2990), 20, 9.3, 10_000, "resnet152.pth", 2048, (10, 40)),
    "vatex": Spec("vatex", (25991, 1500, 1500), 10, 15.0, 20_000, "RET.public.i3d", 1024, (16, 32)),
}
SPLITS = ("train", "val", "test")
CORE_WORDS = 5        # "a man rides a horse"
PLACE_WORDS = 3       # "in the park"


def scaled_counts(spec: Spec, scale: float) -> dict[str, int]:
    """Videos per split at ``scale`` (at least one each)."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    return {s: max(1, int(round(n * scale))) for s, n in zip(SPLITS, spec.split_videos)}


def lexicon_words(n: int) -> list[str]:
    """``n`` distinct pronounceable filler words, deterministic (three syllables each)."""
    s = len(_SYLLABLES)
    out = []
    for i in range(n):
        a, b, c = i % s, (i // s) % s, (i // (s * s)) % s
        out.append(_SYLLABLES[a] + _SYLLABLES[b] + _SYLLABLES[c] + ("" if i < s ** 3 else str(i // s ** 3)))
    return out


def _third_person(v: str) -> str:
    if v.endswith(("sh", "ch", "s", "x")):
        return v + "es"
    if v.endswith("y") and v[-2] not in "aeiou":
        return v[:-1] + "ies"
    return v + "s"


class World:
    """The concept world of one dataset: prototypes, names, the Zipf lexicon."""

    def __init__(self, spec: Spec, seed: int):
        rng = np.random.default_rng([seed, 0])
        self.spec = spec
        self.verbs = list(dict.fromkeys(_VERBS))[:spec.n_verbs]
        self.nouns = list(dict.fromkeys(_NOUNS))[:spec.n_nouns]
        self.vproto = rng.standard_normal((len(self.verbs), spec.dim), dtype=np.float32) * 0.8
        self.nproto = rng.standard_normal((len(self.nouns), spec.dim), dtype=np.float32) * 0.8
        self.lexicon = lexicon_words(spec.lexicon)
        p = 1.0 / np.arange(1, spec.lexicon + 1) ** 1.05   # Zipf
        self.cdf = np.cumsum(p / p.sum())

    def filler(self, rng: np.random.Generator, n: int) -> list[str]:
        idx = np.searchsorted(self.cdf, rng.random(n))
        return [self.lexicon[min(int(i), len(self.lexicon) - 1)] for i in idx]


def _events(rng: np.random.Generator, w: World, n_frames: int) -> list[dict[str, int]]:
    out = []
    for _ in range(w.spec.events):
        subj, obj = (int(x) for x in rng.choice(len(w.nouns), size=2, replace=False))
        width = max(1, int(round(n_frames * rng.uniform(0.4, 0.8))))
        start = int(rng.integers(0, n_frames - width + 1))
        out.append({"verb": int(rng.integers(len(w.verbs))), "subj": subj, "obj": obj, "start": start,
                    "end": start + width})
    return out


def frame_features(rng: np.random.Generator, w: World, n: int, events: list[dict[str, int]]) -> np.ndarray:
    """(n, dim) float32: background + noise + the visible concepts' prototypes."""
    x = rng.standard_normal((n, w.spec.dim), dtype=np.float32)
    x += rng.standard_normal(w.spec.dim, dtype=np.float32)[None, :] * 0.5
    for e in events:
        x[e["start"]:e["end"]] += w.vproto[e["verb"]] + w.nproto[e["subj"]] + w.nproto[e["obj"]]
    return x


def caption(rng: np.random.Generator, w: World, events: list[dict[str, int]]) -> tuple[str, list]:
    """(text, HGR graph [nodes, edges]) of one caption of one of the video's events."""
    e = events[int(rng.integers(len(events)))]
    subj, verb, obj = w.nouns[e["subj"]], _third_person(w.verbs[e["verb"]]), w.nouns[e["obj"]]
    words = ["a", subj, verb, "a", obj]
    extra = max(0, int(rng.poisson(max(w.spec.mean_words - CORE_WORDS, 0.0))))
    place = extra >= PLACE_WORDS and rng.random() < 0.5
    if place:
        words += ["in", "the", _PLACES[int(rng.integers(len(_PLACES)))]]
        extra -= PLACE_WORDS
    words += w.filler(rng, extra)
    nodes = [{"role": "V", "spans": [2]}, {"role": "ARG0", "spans": [0, 1]}, {"role": "ARG1", "spans": [3, 4]}]
    if place:
        nodes.append({"role": "ARGM-LOC", "spans": [5, 6, 7]})
    edges = [{"src": 0, "dst": j, "role": n["role"]} for j, n in enumerate(nodes) if j]
    return " ".join(words), bw.hgr_graph(words, nodes, edges)


def video_name(spec: Spec, split: str, i: int, offset: int) -> str:
    return f"video{offset + i}" if spec.name == "msrvtt" else f"{spec.name}_{split}_{i:06d}"


def generate_videos(w: World, split: str, n: int, seed: int, offset: int = 0) -> Iterator[tuple[str, np.ndarray, list]]:
    """(name, frames, [(caption, graph)] ...) of a split's videos, one at a time; video i from seed (seed, split, i)."""
    code = SPLITS.index(split) + 1
    lo, hi = w.spec.frames
    for i in range(n):
        rng = np.random.default_rng([seed, code, i])
        n_frames = int(rng.integers(lo, hi + 1))
        events = _events(rng, w, n_frames)
        feats = frame_features(rng, w, n_frames, events)
        caps = [caption(rng, w, events) for _ in range(w.spec.captions_per_video)]
        yield video_name(w.spec, split, i, offset), feats, caps


def write_fullsize_bundle(root: str | os.PathLike, dataset: str, scale: float = 1.0, seed: int = 0,
                          progress=None) -> dict[str, Any]:
    """Write the bundle of ``dataset`` ('msrvtt' | 'vatex') at ``scale`` under ``root``; returns its counts."""
    if dataset not in SPECS:
        raise ValueError(f"unknown dataset '{dataset}' (have: {', '.join(SPECS)})")
    spec, root = SPECS[dataset], Path(root)
    w = World(spec, seed)
    counts = scaled_counts(spec, scale)
    train_words: Counter = Counter()
    n_caps = n_words = n_frames = 0
    offset = 0
    paths = bw.layout_paths(root)
    with bw.JsonMapWriter(paths["ref_captions"]) as refs, bw.JsonMapWriter(paths["rolegraphs"]) as graphs:
        seen_text: set[bytes] = set()
        for split in SPLITS:
            names = []
            with bw.FeatureFileWriter(bw.feature_path(root, spec.feature_folder, split)) as feats:
                for name, x, caps in generate_videos(w, split, counts[split], seed, offset):
                    names.append(name)
                    feats.add(name, x)
                    n_frames += x.shape[0]
                    refs.add(name, [t for t, _ in caps])
                    for text, graph in caps:
                        h = hashlib.blake2b(text.encode(), digest_size=8).digest()
                        if h not in seen_text:   # one entry per distinct sentence, as HGR's file
                            seen_text.add(h)
                            graphs.add(text, graph)
                        toks = text.split()
                        n_words += len(toks)
                        if split == "train":
                            train_words.update(toks)
                    n_caps += len(caps)
                    if progress is not None and len(names) % 2000 == 0:
                        progress(f"{split}: {len(names)}/{counts[split]} videos")
            bw.write_string_array(paths[f"names_{split}"], names)
            offset += counts[split]
    int2word = ["<BOS>", "<EOS>", "<UNK>"] + sorted(train_words, key=lambda t: (-train_words[t], t))
    bw.write_string_array(paths["int2word"], int2word)
    bw.write_json(paths["word2int"], {t: i for i, t in enumerate(int2word)})
    return {"dataset": dataset, "scale": scale, "seed": seed, "videos": sum(counts.values()),
            **{f"{s}_videos": counts[s] for s in SPLITS}, "captions": n_caps, "mean_words": n_words / max(n_caps, 1),
            "vocabulary": len(int2word), "dim": spec.dim, "frames": n_frames, "feature_folder": spec.feature_folder,
            "mean_frames": n_frames / max(sum(counts.values()), 1), "graphs": len(seen_text)}
