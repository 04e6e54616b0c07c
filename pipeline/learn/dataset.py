"""Shard tables -> model batches (VideoBatch, TextBatch, ConceptLabels).

A split is read ONCE into compact numpy arrays (:class:`SplitData`); batches are cut
from those arrays, so no Parquet is read per item. Frame features are read from the
split's HDF5 file through one :class:`storage.features.FeatureReader` per process
(opened lazily, so DataLoader workers each get their own handle), or preloaded.

Conventions (documented in docs, tested in tests/test_dataset.py):

* Videos of a split = videos with >= 1 caption in the split AND a feature dataset with
  >= 1 frame; captions of other videos are dropped and counted (``SplitData.notes``).
  Videos are ordered by key; captions by (video, caption_id), i.e. grouped by video.
* Frames: longer than ``max_frames`` -> rows ``np.round(np.linspace(0, n-1, max_frames))``
  (the reference's sampling); shorter -> zero rows + mask False. N is always max_frames.
* Words: the role graph's tokens (the ones its spans index), else tokens.parquet's,
  else the caption split on whitespace; word -> word_id (exact, then lower-cased,
  else UNK=2); truncated to max_words; an empty caption becomes [UNK]. Batches are
  padded with PAD (=EOS=1) to the longest caption in the batch (or ``pad_to``).
* Role graph -> fixed slots: node 0 = ROOT (span = all kept words, role ROOT_ROLE),
  slots 1..max_verbs = the first V nodes (node order), then max_nouns argument slots
  (non-V nodes attached to a kept verb first, then unattached ones, each in node order).
  Spans are clipped to max_words; a node left with no word is dropped; nodes beyond the
  caps are dropped. A node with role ROOT in the table is ignored (we build our own).
  Edges: ROOT<->each verb, verb<->argument for every table edge between kept nodes,
  an argument attached to no kept verb (no-frame fallback graphs, or its verb was cut)
  is attached to ROOT, self loops on every valid node (HANetConfig.graph_edges='improved';
  'reference' builds Roc-Ng/HANet's edges, see ``build_graph``). A caption whose role graph status
  is not ``ok`` (or that has no role-graph row) gets a ROOT-only graph.
* Concept labels: caption multi-hot from caption_labels; ignore mask = concepts of the
  video's OTHER captions (same split) that this caption lacks.
* Training batches (``batch_sampler``): with ``unique_videos`` no video appears twice in
  a batch (the same video twice would be a false negative for the hinge loss); every
  caption is still used once per epoch; the shuffle is seeded by (seed, epoch).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from models.batch import ConceptLabels, TextBatch, VideoBatch
from models.model_configs import DataConfig, ModelConfig
from pipeline.learn.features import FeatureSource
from pipeline.learn.graphs import build_graph
from storage.features import FeatureReader, dataset_name, read_frame_counts
from storage.tables import read_table
from storage.text import read_concept_lemmas

log = logging.getLogger(__name__)

BOS_ID, EOS_ID, UNK_ID = 0, 1, 2
PAD_ID = EOS_ID


# ----------------------------------------------------------------------------- paths
def feature_path(root: str | os.PathLike, extractor: str, split: str) -> Path:
    return Path(root) / "features" / extractor / f"{split}.h5"


def embeddings_path(root: str | os.PathLike) -> Path:
    return Path(root) / "text" / "embeddings.h5"


def load_word_embeddings(root: str | os.PathLike) -> torch.Tensor | None:
    """The (V, D) float32 embedding matrix of text/embeddings.h5 (None when absent)."""
    path = embeddings_path(root)
    if not path.exists():
        return None
    from storage.text import read_embeddings

    arr, _attrs = read_embeddings(path)
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def read_vocab(root: str | os.PathLike) -> dict[str, int]:
    t = read_table(Path(root) / "text" / "words.parquet", "words", columns=["word_id", "word"])
    return dict(zip(t.column("word").to_pylist(), t.column("word_id").to_pylist()))


def concept_counts(root: str | os.PathLike) -> tuple[int, int]:
    t = read_table(Path(root) / "text" / "concepts.parquet", "concepts", columns=["kind", "concept_id"])
    kinds = np.asarray(t.column("kind").to_pylist())
    ids = np.asarray(t.column("concept_id").to_pylist(), dtype=np.int64)
    n = {k: int(ids[kinds == k].max()) + 1 if (kinds == k).any() else 0 for k in ("verb", "noun")}
    return n["verb"], n["noun"]


def concept_lemmas(root: str | os.PathLike) -> dict[str, list[str]]:
    """{'verb': [lemma by concept_id], 'noun': [...]} from text/concepts.parquet."""
    return read_concept_lemmas(Path(root) / "text" / "concepts.parquet")


def dataset_shapes(root: str | os.PathLike, extractor: str, split: str = "train") -> dict[str, int]:
    """Model config fields that are facts of the shards: feat_dim, vocab_size, word_dim, K_a, K_e."""
    root = Path(root)
    with FeatureReader(feature_path(root, extractor, split)) as r:
        feat_dim = r.dim
    emb = load_word_embeddings(root)
    vocab = read_vocab(root)
    n_verbs, n_nouns = concept_counts(root)
    out = {"feat_dim": feat_dim, "vocab_size": max(vocab.values()) + 1 if vocab else 3,
           "n_verb_concepts": n_verbs, "n_noun_concepts": n_nouns}
    if emb is not None:
        if emb.shape[0] != out["vocab_size"]:
            raise ValueError(f"{embeddings_path(root)}: {emb.shape[0]} rows for {out['vocab_size']} words")
        out["word_dim"] = int(emb.shape[1])
    return out


# ----------------------------------------------------------------------------- CSR helpers
def _csr(lists: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    lens = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    offsets = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    values = np.fromiter((int(v) for x in lists for v in x), dtype=np.int64, count=int(offsets[-1]))
    return offsets, values


def _multi_hot(offsets: np.ndarray, values: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((rows.size, k), dtype=bool)
    for j, r in enumerate(rows):
        v = values[offsets[r]:offsets[r + 1]]
        out[j, v[(v >= 0) & (v < k)]] = True
    return out


# ----------------------------------------------------------------------------- split data
@dataclass
class SplitData:
    """One split, compact: everything a batch needs except the frame features."""

    root: Path
    split: str
    extractor: str
    hcfg: DataConfig                 # what the model reads: caps, edge rule, concept counts
    keys: list[str]                  # video keys (V,), sorted
    cap2vid: np.ndarray              # (C,) int64 video index of each caption
    caption_ids: np.ndarray          # (C,) int64 global caption_id
    captions: list[str]              # (C,) raw caption text
    word_ids: np.ndarray             # (C, max_words) int32, PAD-padded
    lengths: np.ndarray              # (C,) int64 >= 1
    node_masks: np.ndarray           # (C, G, max_words) bool
    node_roles: np.ndarray           # (C, G) int16
    node_valid: np.ndarray           # (C, G) bool
    adjacency: np.ndarray            # (C, G, G) bool
    verb_csr: tuple[np.ndarray, np.ndarray]
    noun_csr: tuple[np.ndarray, np.ndarray]
    video_verb_csr: tuple[np.ndarray, np.ndarray]   # union of the video's captions (this split)
    video_noun_csr: tuple[np.ndarray, np.ndarray]
    n_verbs: int
    n_nouns: int
    notes: dict[str, int] = field(default_factory=dict)
    _features: "FeatureSource | None" = None

    @property
    def n_videos(self) -> int:
        return len(self.keys)

    @property
    def n_captions(self) -> int:
        return int(self.cap2vid.size)

    @property
    def features(self) -> "FeatureSource":
        if self._features is None:
            self._features = FeatureSource(feature_path(self.root, self.extractor, self.split),
                                           self.hcfg.max_frames)
        return self._features

    # -- batches ---------------------------------------------------------------
    def video_batch(self, video_idx: Sequence[int]) -> VideoBatch:
        feats, masks = zip(*(self.features.get(self.keys[int(i)]) for i in video_idx))
        return VideoBatch(feats=torch.from_numpy(np.stack(feats)), mask=torch.from_numpy(np.stack(masks)))

    def text_batch(self, caption_idx: Sequence[int], pad_to: int | None = None) -> TextBatch:
        idx = np.asarray(caption_idx, dtype=np.int64)
        lengths = self.lengths[idx]
        L = int(pad_to) if pad_to else int(lengths.max())
        L = min(max(L, int(lengths.max())), self.word_ids.shape[1])
        return TextBatch(
            word_ids=torch.from_numpy(self.word_ids[idx, :L].astype(np.int64)),
            lengths=torch.from_numpy(lengths.copy()),
            node_masks=torch.from_numpy(self.node_masks[idx, :, :L].astype(np.float32)),
            node_roles=torch.from_numpy(self.node_roles[idx].astype(np.int64)),
            node_valid=torch.from_numpy(self.node_valid[idx].copy()),
            adjacency=torch.from_numpy(self.adjacency[idx].astype(np.float32)),
        )

    def labels(self, caption_idx: Sequence[int]) -> ConceptLabels:
        idx = np.asarray(caption_idx, dtype=np.int64)
        vid = self.cap2vid[idx]
        verbs = _multi_hot(*self.verb_csr, idx, self.n_verbs)
        nouns = _multi_hot(*self.noun_csr, idx, self.n_nouns)
        vverbs = _multi_hot(*self.video_verb_csr, vid, self.n_verbs)
        vnouns = _multi_hot(*self.video_noun_csr, vid, self.n_nouns)
        return ConceptLabels(
            verbs=torch.from_numpy(verbs.astype(np.float32)),
            nouns=torch.from_numpy(nouns.astype(np.float32)),
            verb_ignore=torch.from_numpy(vverbs & ~verbs),
            noun_ignore=torch.from_numpy(vnouns & ~nouns),
        )

    def video_labels(self, video_idx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(verbs (n, K_a) bool, nouns (n, K_e) bool): union of each video's caption concepts."""
        vid = np.asarray(video_idx, dtype=np.int64)
        return (_multi_hot(*self.video_verb_csr, vid, self.n_verbs),
                _multi_hot(*self.video_noun_csr, vid, self.n_nouns))

    def captions_of(self, v: int) -> np.ndarray:
        return np.flatnonzero(self.cap2vid == v)

    def head(self, n_videos: int, captions_per_video: int | None = None) -> "SplitData":
        """The first ``n_videos`` videos with their captions (at most ``captions_per_video`` each);
        shares the feature source. For benchmarks and quick checks."""
        n_videos = min(int(n_videos), self.n_videos)
        keep = self.cap2vid < n_videos
        if captions_per_video is not None:
            first = np.searchsorted(self.cap2vid, self.cap2vid)          # captions are grouped by video
            keep &= (np.arange(self.n_captions) - first) < captions_per_video
        idx = np.flatnonzero(keep)

        def sub_csr(csr, rows):
            off, val = csr
            lists = [val[off[r]:off[r + 1]] for r in rows]
            return _csr(lists)

        return dataclasses.replace(
            self, keys=self.keys[:n_videos], cap2vid=self.cap2vid[idx], caption_ids=self.caption_ids[idx],
            captions=[self.captions[i] for i in idx], word_ids=self.word_ids[idx], lengths=self.lengths[idx],
            node_masks=self.node_masks[idx], node_roles=self.node_roles[idx], node_valid=self.node_valid[idx],
            adjacency=self.adjacency[idx], verb_csr=sub_csr(self.verb_csr, idx),
            noun_csr=sub_csr(self.noun_csr, idx), video_verb_csr=sub_csr(self.video_verb_csr, range(n_videos)),
            video_noun_csr=sub_csr(self.video_noun_csr, range(n_videos)),
            notes={**self.notes, "head_of": self.n_videos}, _features=self._features)


def _split_captions(root: Path, split: str, extractor: str, notes: dict[str, int]) -> tuple[list[dict], list[str]]:
    """(the split's captions of videos with features, sorted by video then caption_id; the video keys, sorted)."""
    cap = read_table(root / "captions.parquet", "captions").to_pylist()
    cap = [r for r in cap if r["split"] == split]
    if not cap:
        raise ValueError(f"{root}: no captions in split '{split}'")
    fpath = feature_path(root, extractor, split)
    if not fpath.exists():
        raise FileNotFoundError(f"{fpath}: no '{extractor}' features for split '{split}'; run that stage first")
    nframes = read_frame_counts(fpath)
    keys_all = sorted({r["key"] for r in cap})
    keys = [k for k in keys_all if nframes.get(dataset_name(k), 0) > 0]
    notes["videos_without_features"] = len(keys_all) - len(keys)
    if notes["videos_without_features"]:
        log.warning("%s/%s: %d videos have no usable '%s' features; their captions are dropped",
                    root.name, split, notes["videos_without_features"], extractor)
    if not keys:
        raise ValueError(f"{root}: split '{split}' has no video with features")
    vindex = {k: i for i, k in enumerate(keys)}
    cap = [r for r in cap if r["key"] in vindex]
    cap.sort(key=lambda r: (vindex[r["key"]], r["caption_id"]))
    return cap, keys


def _graphs_and_tokens(root: Path, split: str) -> tuple[dict[int, dict], dict[int, list[str]]]:
    """caption_id -> role graph (with the tokens its spans index into), and -> tokens (the fallback)."""
    text = root / "text"
    graphs: dict[int, dict] = {}
    gpath = text / "role_graphs.parquet"
    if gpath.exists():
        for g in read_table(gpath, "role_graphs").to_pylist():
            if g["split"] == split:
                graphs[g["caption_id"]] = g
    else:
        log.warning("%s: no role_graphs table; every caption gets a ROOT-only graph", root)
    toks: dict[int, list[str]] = {}
    tpath = text / "tokens.parquet"
    if tpath.exists():
        t = read_table(tpath, "tokens", columns=["caption_id", "split", "tokens"])
        for cid, sp, tk in zip(t.column("caption_id").to_pylist(), t.column("split").to_pylist(),
                               t.column("tokens").to_pylist()):
            if sp == split:
                toks[cid] = tk or []
    return graphs, toks


def _word_ids(tokens: Sequence[str], vocab: dict[str, int], max_words: int) -> tuple[list[int], int]:
    """(ids of the first ``max_words`` tokens, exact word else lower-cased else UNK; [UNK] if none), unknown count."""
    ids, n_unk = [], 0
    for w in tokens[:max_words]:
        i = vocab.get(w)
        if i is None:
            i = vocab.get(w.lower(), UNK_ID)
        n_unk += i == UNK_ID
        ids.append(i)
    return ids or [UNK_ID], n_unk


def _encode_captions(cap: list[dict], graphs: dict[int, dict], toks: dict[int, list[str]], vocab: dict[str, int],
                     hcfg: DataConfig, notes: dict[str, int]) -> dict[str, np.ndarray]:
    """word_ids, lengths and the role-graph slots (node_masks, node_roles, node_valid, adjacency) of every caption."""
    mw, mv, mn = hcfg.max_words, hcfg.max_verbs, hcfg.max_nouns
    edges_mode = hcfg.graph_edges
    g_slots, C = 1 + mv + mn, len(cap)
    out = {"word_ids": np.full((C, mw), PAD_ID, dtype=np.int32), "lengths": np.ones(C, dtype=np.int64),
           "node_masks": np.zeros((C, g_slots, mw), dtype=bool), "node_roles": np.zeros((C, g_slots), dtype=np.int16),
           "node_valid": np.zeros((C, g_slots), dtype=bool),
           "adjacency": np.zeros((C, g_slots, g_slots), dtype=bool)}
    n_unk = n_not_ok = n_trunc = 0
    for j, r in enumerate(cap):
        g = graphs.get(r["caption_id"])
        tokens = (g or {}).get("tokens") or toks.get(r["caption_id"]) or (r["caption"] or "").split()
        ids, unk = _word_ids(tokens, vocab, mw)
        n_unk += unk
        n_trunc += len(tokens) > mw
        out["word_ids"][j, :len(ids)] = ids
        out["lengths"][j] = len(ids)
        ok = g is not None and g.get("status") == "ok"
        n_not_ok += not ok
        graph = build_graph((g or {}).get("nodes"), (g or {}).get("edges"), len(ids), mw, mv, mn, ok, edges_mode)
        for name, value in zip(("node_masks", "node_roles", "node_valid", "adjacency"), graph):
            out[name][j] = value
    notes.update(unk_tokens=int(n_unk), graphs_not_ok=int(n_not_ok), captions_truncated=int(n_trunc))
    return out


def _concept_labels(root: Path, split: str, hcfg: DataConfig, cap_ids: np.ndarray, cap2vid: np.ndarray,
                    n_videos: int, notes: dict[str, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Caption and video concept ids as CSR (verb_csr, noun_csr, video_verb_csr, video_noun_csr).

    Labels have the MODEL's widths (K_a, K_e); the concept table should agree (run_train resolves the
    config from it), ids beyond the model's width are dropped with a warning."""
    text = root / "text"
    if (text / "concepts.parquet").exists():
        t_verbs, t_nouns = concept_counts(root)
        if (t_verbs, t_nouns) != (hcfg.n_verb_concepts, hcfg.n_noun_concepts):
            log.warning("%s: concept table has %d verbs / %d nouns, the model %d / %d", root, t_verbs, t_nouns,
                        hcfg.n_verb_concepts, hcfg.n_noun_concepts)
    lab: dict[int, tuple[list[int], list[int]]] = {}
    lpath = text / "caption_labels.parquet"
    if lpath.exists():
        t = read_table(lpath, "caption_labels", columns=["caption_id", "split", "verb_ids", "noun_ids"])
        for cid, sp, vv, nn in zip(*(t.column(c).to_pylist() for c in ("caption_id", "split", "verb_ids",
                                                                         "noun_ids"))):
            if sp == split:
                lab[cid] = (vv or [], nn or [])
    else:
        log.warning("%s: no caption_labels table; concept labels are all zero", root)
    notes["captions_without_labels"] = int(sum(c not in lab for c in cap_ids.tolist()))
    cverbs = [lab.get(c, ([], []))[0] for c in cap_ids.tolist()]
    cnouns = [lab.get(c, ([], []))[1] for c in cap_ids.tolist()]
    vverbs: list[set[int]] = [set() for _ in range(n_videos)]
    vnouns: list[set[int]] = [set() for _ in range(n_videos)]
    for v, a, b in zip(cap2vid.tolist(), cverbs, cnouns):
        vverbs[v].update(a)
        vnouns[v].update(b)
    return {"verb_csr": _csr(cverbs), "noun_csr": _csr(cnouns),
            "video_verb_csr": _csr([sorted(s) for s in vverbs]), "video_noun_csr": _csr([sorted(s) for s in vnouns])}


def load_split(root: str | os.PathLike, split: str, hcfg: DataConfig | ModelConfig, extractor: str = "resnet152",
               preload_features: bool = False) -> SplitData:
    """Read one split's tables once into a :class:`SplitData`; ``hcfg``: the model's config (any registered
    model's) or its ``data_config()``."""
    root = Path(root)
    hcfg = hcfg if isinstance(hcfg, DataConfig) else hcfg.data_config()
    notes: dict[str, int] = {}
    cap, keys = _split_captions(root, split, extractor, notes)
    vindex = {k: i for i, k in enumerate(keys)}
    cap_ids = np.asarray([r["caption_id"] for r in cap], dtype=np.int64)
    cap2vid = np.asarray([vindex[r["key"]] for r in cap], dtype=np.int64)
    graphs, toks = _graphs_and_tokens(root, split)
    notes.update(captions=len(cap), videos=len(keys))
    arrays = _encode_captions(cap, graphs, toks, read_vocab(root), hcfg, notes)
    labels = _concept_labels(root, split, hcfg, cap_ids, cap2vid, len(keys), notes)
    data = SplitData(
        root=root, split=split, extractor=extractor, hcfg=hcfg, keys=keys, cap2vid=cap2vid,
        caption_ids=cap_ids, captions=[r["caption"] for r in cap], **arrays, **labels,
        n_verbs=hcfg.n_verb_concepts, n_nouns=hcfg.n_noun_concepts, notes=notes,
    )
    if preload_features:
        data.features.preload(keys)
    log.info("%s/%s: %d videos, %d captions (%s)", root.name, split, len(keys), len(cap),
             ", ".join(f"{k}={v}" for k, v in notes.items() if v and k not in ("captions", "videos")))
    return data
