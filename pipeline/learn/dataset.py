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
from typing import Iterator, Sequence

import numpy as np
import torch

from models.batch import ROLE_IDS, ROOT_ROLE, ConceptLabels, TextBatch, VideoBatch, role_id
from models.config import HANetConfig
from storage.features import FeatureReader, dataset_name, read_frame_counts
from storage.tables import read_table
from storage.text import read_concept_lemmas

log = logging.getLogger(__name__)

BOS_ID, EOS_ID, UNK_ID = 0, 1, 2
PAD_ID = EOS_ID
VERB_ROLE = ROLE_IDS["V"]


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
    """HANetConfig fields that are facts of the shards: feat_dim, vocab_size, word_dim, K_a, K_e."""
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


# ----------------------------------------------------------------------------- frames
def sample_frames(feats: np.ndarray, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, D) -> ((max_frames, D) float32, (max_frames,) bool mask)."""
    feats = np.asarray(feats, dtype=np.float32)
    n, d = feats.shape
    out = np.zeros((max_frames, d), dtype=np.float32)
    mask = np.zeros(max_frames, dtype=bool)
    if n > max_frames:
        idx = np.round(np.linspace(0, n - 1, max_frames)).astype(np.int64)
        out[:] = feats[idx]
        mask[:] = True
    else:
        out[:n] = feats
        mask[:n] = True
    return out, mask


# ----------------------------------------------------------------------------- graphs
def build_graph(nodes: Sequence[dict] | None, edges: Sequence[dict] | None, n_words: int,
                max_words: int, max_verbs: int, max_nouns: int, ok: bool = True,
                edges_mode: str = "improved"):
    """One caption's role graph -> (span masks (G, max_words) bool, roles (G,) int64,
    valid (G,) bool, adjacency (G, G) bool) with G = 1 + max_verbs + max_nouns.

    adjacency[i, j] = node i receives from node j. edges_mode (HANetConfig.graph_edges):
    'improved' = the module docstring's rules; 'reference' = Roc-Ng/HANet's reader
    (t2vretrieval/readers/rolegraphs.py): argument slots in node order, edges root->verb
    (the root receives nothing) and verb<->argument for table edges (src verb, dst argument),
    no self loops, an argument without a kept verb stays unconnected. (The reference
    row-normalises its matrix; the attention GCN only reads which entries are non-zero.)"""
    if edges_mode not in ("improved", "reference"):
        raise ValueError(f"edges_mode must be 'improved' or 'reference', got {edges_mode!r}")
    ref = edges_mode == "reference"
    g = 1 + max_verbs + max_nouns
    masks = np.zeros((g, max_words), dtype=bool)
    roles = np.zeros(g, dtype=np.int64)
    valid = np.zeros(g, dtype=bool)
    adj = np.zeros((g, g), dtype=bool)
    n_kept = max(1, min(int(n_words), max_words))
    masks[0, :n_kept] = True
    roles[0] = ROOT_ROLE
    valid[0] = True
    adj[0, 0] = not ref
    if not ok or not nodes:
        return masks, roles, valid, adj

    spans = []
    for nd in nodes:
        sp = [int(i) for i in (nd.get("spans") or []) if 0 <= int(i) < n_kept]
        spans.append(sp)
    is_root = [str(nd.get("role", "")).upper() == "ROOT" for nd in nodes]
    verbs = [i for i, nd in enumerate(nodes) if nd.get("role") == "V" and spans[i] and not is_root[i]][:max_verbs]
    verb_set = set(verbs)
    edge_pairs = [(int(e["src"]), int(e["dst"])) for e in (edges or [])]
    attached = {d for s, d in edge_pairs if s in verb_set} | {s for s, d in edge_pairs if d in verb_set}
    args = [i for i, nd in enumerate(nodes)
            if nd.get("role") != "V" and spans[i] and not is_root[i]]
    args = (args if ref else sorted(args, key=lambda i: (i not in attached, i)))[:max_nouns]

    slot: dict[int, int] = {}
    for k, i in enumerate(verbs):
        slot[i] = 1 + k
        roles[1 + k] = VERB_ROLE
    for k, i in enumerate(args):
        slot[i] = 1 + max_verbs + k
        roles[1 + max_verbs + k] = role_id(str(nodes[i].get("role", "NOUN")))
    for i, s in slot.items():
        masks[s, spans[i]] = True
        valid[s] = True
        adj[s, s] = not ref
    if ref:
        for i in verbs:
            adj[slot[i], 0] = True  # root -> verb: the verb receives from the root
        for s, d in edge_pairs:
            if s in verb_set and d in slot and d not in verb_set:
                adj[slot[s], slot[d]] = adj[slot[d], slot[s]] = True
        return masks, roles, valid, adj
    for i in verbs:
        adj[0, slot[i]] = adj[slot[i], 0] = True
    linked = set()
    for s, d in edge_pairs:
        if s in slot and d in slot and s != d and ((s in verb_set) != (d in verb_set)):
            adj[slot[s], slot[d]] = adj[slot[d], slot[s]] = True
            linked.add(s if s not in verb_set else d)
    for i in args:
        if i not in linked:  # unattached argument: hang it off the sentence root
            adj[0, slot[i]] = adj[slot[i], 0] = True
    return masks, roles, valid, adj


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
    hcfg: HANetConfig
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


def load_split(root: str | os.PathLike, split: str, hcfg: HANetConfig, extractor: str = "resnet152",
               preload_features: bool = False) -> SplitData:
    """Read one split's tables once into a :class:`SplitData`."""
    root = Path(root)
    text = root / "text"
    cap = read_table(root / "captions.parquet", "captions").to_pylist()
    cap = [r for r in cap if r["split"] == split]
    if not cap:
        raise ValueError(f"{root}: no captions in split '{split}'")
    notes: dict[str, int] = {}

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
    cap_ids = np.asarray([r["caption_id"] for r in cap], dtype=np.int64)
    cap2vid = np.asarray([vindex[r["key"]] for r in cap], dtype=np.int64)

    # role graphs (tokens the spans index into) and tokens table fallback
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

    vocab = read_vocab(root)
    mw, mv, mn = hcfg.max_words, hcfg.max_verbs, hcfg.max_nouns
    edges_mode = hcfg.deviation("graph_edges")
    g_slots = 1 + mv + mn
    C = len(cap)
    word_ids = np.full((C, mw), PAD_ID, dtype=np.int32)
    lengths = np.ones(C, dtype=np.int64)
    node_masks = np.zeros((C, g_slots, mw), dtype=bool)
    node_roles = np.zeros((C, g_slots), dtype=np.int16)
    node_valid = np.zeros((C, g_slots), dtype=bool)
    adjacency = np.zeros((C, g_slots, g_slots), dtype=bool)
    n_unk = n_not_ok = n_trunc = 0
    for j, r in enumerate(cap):
        g = graphs.get(r["caption_id"])
        tokens = (g or {}).get("tokens") or toks.get(r["caption_id"]) or (r["caption"] or "").split()
        ids = []
        for w in tokens[:mw]:
            i = vocab.get(w)
            if i is None:
                i = vocab.get(w.lower(), UNK_ID)
            n_unk += i == UNK_ID
            ids.append(i)
        n_trunc += len(tokens) > mw
        if not ids:
            ids = [UNK_ID]
        word_ids[j, :len(ids)] = ids
        lengths[j] = len(ids)
        ok = g is not None and g.get("status") == "ok"
        n_not_ok += not ok
        m, ro, va, ad = build_graph((g or {}).get("nodes"), (g or {}).get("edges"), len(ids), mw, mv, mn, ok,
                                    edges_mode)
        node_masks[j], node_roles[j], node_valid[j], adjacency[j] = m, ro, va, ad
    notes.update(captions=C, videos=len(keys), unk_tokens=int(n_unk), graphs_not_ok=int(n_not_ok),
                 captions_truncated=int(n_trunc))

    # concept labels
    # labels have the MODEL's widths (K_a, K_e); the concept table should agree (run_train resolves
    # the config from it), ids beyond the model's width are dropped with a warning
    n_verbs, n_nouns = hcfg.n_verb_concepts, hcfg.n_noun_concepts
    if (text / "concepts.parquet").exists():
        t_verbs, t_nouns = concept_counts(root)
        if (t_verbs, t_nouns) != (n_verbs, n_nouns):
            log.warning("%s: concept table has %d verbs / %d nouns, the model %d / %d", root, t_verbs, t_nouns,
                        n_verbs, n_nouns)
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
    vverbs: list[set[int]] = [set() for _ in keys]
    vnouns: list[set[int]] = [set() for _ in keys]
    for v, a, b in zip(cap2vid.tolist(), cverbs, cnouns):
        vverbs[v].update(a)
        vnouns[v].update(b)

    data = SplitData(
        root=root, split=split, extractor=extractor, hcfg=hcfg, keys=keys, cap2vid=cap2vid,
        caption_ids=cap_ids, captions=[r["caption"] for r in cap], word_ids=word_ids, lengths=lengths,
        node_masks=node_masks, node_roles=node_roles, node_valid=node_valid, adjacency=adjacency,
        verb_csr=_csr(cverbs), noun_csr=_csr(cnouns),
        video_verb_csr=_csr([sorted(s) for s in vverbs]), video_noun_csr=_csr([sorted(s) for s in vnouns]),
        n_verbs=n_verbs, n_nouns=n_nouns, notes=notes,
    )
    if preload_features:
        data.features.preload(keys)
    log.info("%s/%s: %d videos, %d captions (%s)", root.name, split, len(keys), C,
             ", ".join(f"{k}={v}" for k, v in notes.items() if v and k not in ("captions", "videos")))
    return data


# ----------------------------------------------------------------------------- features
class FeatureSource:
    """Fixed-size frame features by video key: one HDF5 handle per process, optional preload."""

    def __init__(self, path: Path, max_frames: int):
        self.path = Path(path)
        self.max_frames = max_frames
        self._reader: FeatureReader | None = None
        self._pid: int | None = None
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _r(self) -> FeatureReader:
        if self._reader is None or self._pid != os.getpid():
            self._reader = FeatureReader(self.path)  # never share an h5py handle across fork
            self._pid = os.getpid()
        return self._reader

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        return sample_frames(self._r()[key], self.max_frames)

    def preload(self, keys: Sequence[str]) -> None:
        for k in keys:
            self._cache[k] = self.get(k)

    def close(self) -> None:
        if self._reader is not None and self._pid == os.getpid():
            self._reader.close()
        self._reader = None

    def __getstate__(self):  # picklable for DataLoader workers: no open handle travels
        d = dict(self.__dict__)
        d["_reader"] = None
        d["_pid"] = None
        return d


# ----------------------------------------------------------------------------- training batches
def epoch_batches(cap2vid: np.ndarray, batch_size: int, seed: int, epoch: int, unique_videos: bool = True,
                  min_batch: int = 2) -> list[np.ndarray]:
    """Caption-index batches of one epoch; every caption once; deterministic in (seed, epoch).

    With ``unique_videos`` a caption whose video is already in the forming batch waits
    for the next batch (greedy, FIFO), so no batch holds one video twice. Only the last
    few batches can be short (when few videos are left); batches below ``min_batch``
    items are dropped (a hinge loss needs a negative).
    """
    rng = np.random.default_rng([int(seed), int(epoch)])
    order = rng.permutation(cap2vid.size)
    if not unique_videos:
        batches = [order[i:i + batch_size] for i in range(0, order.size, batch_size)]
        return [b for b in batches if b.size >= min_batch]
    batches: list[np.ndarray] = []
    waiting: list[int] = []      # captions deferred because their video was taken
    cur: list[int] = []
    used: set[int] = set()
    it = iter(order.tolist())

    def close_batch():
        nonlocal cur, used
        batches.append(np.asarray(cur, dtype=np.int64))
        cur, used = [], set()

    exhausted = False
    while True:
        # first the deferred captions, then fresh ones
        still: list[int] = []
        for c in waiting:
            v = int(cap2vid[c])
            if len(cur) < batch_size and v not in used:
                cur.append(c)
                used.add(v)
            else:
                still.append(c)
        waiting = still
        while len(cur) < batch_size and not exhausted:
            c = next(it, None)
            if c is None:
                exhausted = True
                break
            v = int(cap2vid[c])
            if v in used:
                waiting.append(c)
            else:
                cur.append(c)
                used.add(v)
        if not cur:
            break
        close_batch()
        if exhausted and not waiting:
            break
    return [b for b in batches if b.size >= min_batch]


class TrainBatches:
    """An iterable of (VideoBatch, TextBatch, ConceptLabels) for one epoch."""

    def __init__(self, data: SplitData, batch_size: int, seed: int, epoch: int, unique_videos: bool = True,
                 max_steps: int = 0, num_workers: int = 0):
        self.data = data
        self.batches = epoch_batches(data.cap2vid, batch_size, seed, epoch, unique_videos)
        if max_steps:
            self.batches = self.batches[:max_steps]
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.batches)

    def _make(self, idx: np.ndarray):
        d = self.data
        return d.video_batch(d.cap2vid[idx]), d.text_batch(idx), d.labels(idx)

    def __iter__(self) -> Iterator[tuple[VideoBatch, TextBatch, ConceptLabels]]:
        if self.num_workers <= 0:
            for b in self.batches:
                yield self._make(b)
            return
        # own generator: creating worker seeds must not consume the global torch RNG (dropout),
        # so num_workers does not change the training trajectory. forkserver, not fork: the
        # parent runs threads (Prefect, decode pools) and forked workers inherited broken state
        # (seen as workers exiting with code 1 in the full test session).
        loader = torch.utils.data.DataLoader(
            _BatchList(self.batches, self._make), batch_size=None, shuffle=False,
            num_workers=self.num_workers, persistent_workers=False, generator=torch.Generator().manual_seed(0),
            multiprocessing_context="forkserver")
        yield from loader


class _BatchList(torch.utils.data.Dataset):
    def __init__(self, batches, make):
        self.batches, self.make = batches, make

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        return self.make(self.batches[i])
