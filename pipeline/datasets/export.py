"""Export a built shard tree in the released layout of HGR / HANet, for the authors' own code.

``run_export(shards, dest)`` writes what cshizhe/hgr_v2t and Roc-Ng/HANet read unmodified (file
formats: :mod:`storage.bundle_write`); ``format=hgr-bundle`` (pipeline/datasets/bundle.py) reads it
back. What the layout does to the data, and what it refuses:

* Captions: the reference readers split a caption on whitespace and look each word up EXACTLY
  in word2int.json, and role-graph spans index those words. So each caption is written as its
  tokens (the role graph's token list, which our loader encodes) joined by one space; a token
  that is only in the vocabulary lower-cased is written lower-cased (our loader's fallback
  lookup). Captions whose text changed are counted (``captions_rewritten``). A caption with no
  token is left out (counted), a token holding whitespace is refused. Per video, captions are listed by
  ``sen_id`` (HANet's label lists index that order; a re-import numbers them 0, 1, ...).
* Role graphs: keyed by caption text; a caption whose graph failed is written as a ROOT-only
  graph (the readers need every caption); two captions with the same text but different
  graphs keep the first (``graph_conflicts``).
* Videos: a video is exported when it is ``ok``, has captions, and has features in every
  exported feature set; the others are left out and listed (the readers need all three).
  Names colliding once '/' becomes '_' are refused.
* Features: ``features/<set>/<split>.h5`` copied bit-identical into
  ``ordered_feature/SA/<folder>/{trn,val,tst}_ft.hdf5`` (folder ``resnet152.pth`` for a
  ResNet152 set, as HGR's configs and HANet's path.json name it; else the set's name).
* Concepts (HANet): more than 512 verb / 1024 noun concepts are refused (its reader's label
  width); ``*_gt.json`` lists every exported video (the reference reads its train videos;
  a re-import then gets the same labels for every split).
* Word embeddings: ``text/embeddings.h5`` as the reference's init file (name from the READMEs;
  ``export.json`` records the real source of the vectors).

The tree is assembled under a temporary sibling and renamed into place; an existing ``dest``
is replaced only when it is an earlier export and ``overwrite`` is set.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from storage import bundle_write as bw
from storage.atomic import atomic_write_text
from storage.bundle import SPLIT_CODES
from storage.bundle_write import ExportError
from storage.features import dataset_name
from storage.tables import read_table
from storage.text import read_embeddings

INFO = "export.json"
SPLITS = tuple(SPLIT_CODES)


# ----------------------------------------------------------------------------- reading the shards
def _table(root: Path, rel: str, name: str, columns: list[str] | None = None) -> list[dict]:
    path = root / rel
    if not path.is_file():
        raise ExportError(f"{root}: no {rel} (build the dataset first: vtr build ...)")
    return read_table(path, name, columns=columns).to_pylist()


def feature_sets(root: Path, wanted: list[str] | None) -> dict[str, dict[str, Path]]:
    """{feature set: {split: file}}; every wanted set needs all three split files."""
    fdir = root / "features"
    present = sorted(p.name for p in fdir.iterdir() if p.is_dir()) if fdir.is_dir() else []
    names = list(wanted) if wanted else [n for n in present if any((fdir / n / f"{s}.h5").is_file() for s in SPLITS)]
    if not names:
        raise ExportError(f"{root}: no feature set under features/ (present: {present or 'none'})")
    out = {}
    for name in names:
        files = {s: fdir / name / f"{s}.h5" for s in SPLITS}
        absent = [str(p.relative_to(root)) for p in files.values() if not p.is_file()]
        if absent:
            raise ExportError(f"{root}: feature set '{name}' lacks {', '.join(absent)} (present sets: {present})")
        out[name] = files
    return out


def folder_name(feature_set: str) -> str:
    """Our feature set -> its folder under ordered_feature/SA (the released name where one exists)."""
    base = feature_set.removeprefix("imported-")
    return "resnet152.pth" if "resnet152" in base.lower() else base


def _ok_features(root: Path, name: str) -> set[str]:
    path = root / "features" / name / "status.parquet"
    if not path.is_file():
        from storage.features import FeatureReader

        keys: set[str] = set()
        for s in SPLITS:
            with FeatureReader(root / "features" / name / f"{s}.h5") as r:
                keys.update(r.keys())
        return keys
    return {r["key"] for r in read_table(path, "feature_status", columns=["key", "status"]).to_pylist()
            if r["status"] == "ok"}


# ----------------------------------------------------------------------------- captions and graphs
def caption_tokens(tokens: list[str], word2int: dict[str, int]) -> list[str]:
    """The words the reference will look up: ours, lower-cased where only that form is in the vocabulary."""
    return [t if t in word2int or t.lower() not in word2int else t.lower() for t in tokens]


def _check_tokens(cid: int, tokens: list[str]) -> None:
    bad = next((t for t in tokens if not t or t != t.strip() or len(t.split()) != 1), None)
    if bad is not None:
        raise ExportError(f"caption {cid}: token {bad!r} is empty or holds whitespace; the reference splits "
                          "captions on whitespace, so its role-graph spans would not line up")


def text_of(root: Path, word2int: dict[str, int]) -> tuple[dict[int, dict], dict[str, int]]:
    """caption_id -> {'text', 'graph' (HGR value), 'failed'}; counts of rewritten texts etc."""
    caps = {c["caption_id"]: c for c in _table(root, "captions.parquet", "captions")}
    graphs = {g["caption_id"]: g for g in _table(root, "text/role_graphs.parquet", "role_graphs")}
    tokens = {t["caption_id"]: t for t in _table(root, "text/tokens.parquet", "tokens", ["caption_id", "tokens"])}
    out, counts = {}, Counter()
    for cid, c in caps.items():
        g = graphs.get(cid)
        toks = list((g or {}).get("tokens") or (tokens.get(cid) or {}).get("tokens") or c["caption"].split())
        if not toks:  # the readers cannot encode an empty caption: left out, counted
            counts["captions_empty_left_out"] += 1
            continue
        _check_tokens(cid, toks)
        words = caption_tokens(toks, word2int)
        ok = bool(g) and g["status"] in ("ok", "truncated")
        value = bw.hgr_graph(words, g["nodes"] if ok else [], g["edges"] if ok else [])
        text = " ".join(words)
        counts["captions_rewritten"] += text != c["caption"]
        counts["tokens_lowercased"] += sum(a != b for a, b in zip(toks, words))
        counts["graphs_failed"] += not ok
        out[cid] = {"text": text, "graph": value, "failed": not ok}
    return out, dict(counts)


def sentence_graphs(texts: dict[int, dict], exported: list[int]) -> tuple[dict[str, list], int]:
    """{caption text: HGR graph} over exported captions; same text with another graph keeps the first
    (a failed graph never replaces a parsed one)."""
    out: dict[str, list] = {}
    failed: set[str] = set()
    conflicts = 0
    for cid in exported:
        t = texts[cid]
        prev = out.get(t["text"])
        if prev is None or (t["text"] in failed and not t["failed"]):
            out[t["text"]] = t["graph"]
            failed.discard(t["text"])
            if t["failed"]:
                failed.add(t["text"])
        elif prev != t["graph"] and not t["failed"]:
            conflicts += 1
    return out, conflicts


# ----------------------------------------------------------------------------- videos
def select_videos(root: Path, caps_of: dict[str, list[dict]], sets: dict[str, dict]) -> tuple[dict, list]:
    """({split: [keys]} of exportable videos in videos.parquet order, [(key, why left out)])."""
    ok_sets = {name: _ok_features(root, name) for name in sets}
    by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
    left: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for v in _table(root, "videos.parquet", "videos", ["key", "split", "status"]):
        key, why = v["key"], None
        if v["split"] not in by_split:
            why = f"split '{v['split']}' has no released name"
        elif v["status"] != "ok":
            why = "video status is not ok"
        elif not caps_of.get(key):
            why = "no captions"
        else:
            why = next((f"no '{n}' features" for n, ok in ok_sets.items() if key not in ok), None)
        if why:
            left.append((key, why))
            continue
        h = dataset_name(key)
        if h in seen:
            raise ExportError(f"video names '{seen[h]}' and '{key}' are the same once '/' becomes '_' "
                              "(the HDF5 dataset name of the released layout)")
        seen[h] = key
        by_split[v["split"]].append(key)
    return by_split, left


# ----------------------------------------------------------------------------- vocabulary and concepts
def vocabulary(root: Path) -> list[str]:
    rows = _table(root, "text/words.parquet", "words", ["word_id", "word"])
    words = [r["word"] for r in sorted(rows, key=lambda r: r["word_id"])]
    if [r["word_id"] for r in sorted(rows, key=lambda r: r["word_id"])] != list(range(len(words))):
        raise ExportError(f"{root}/text/words.parquet: word ids are not 0..{len(words) - 1}")
    if len(set(words)) != len(words) or len(words) < 3:
        raise ExportError(f"{root}/text/words.parquet: repeated words or fewer than 3 (ids 0-2 are BOS/EOS/UNK)")
    return words


def concept_vocab(root: Path) -> dict[str, dict[str, int]] | None:
    """{kind: {lemma: train count}} in concept-id order, None without text/concepts.parquet."""
    if not (root / "text/concepts.parquet").is_file():
        return None
    out: dict[str, dict[str, int]] = {}
    for kind, width in bw.HANET_WIDTHS.items():
        rows = sorted((r for r in _table(root, "text/concepts.parquet", "concepts") if r["kind"] == kind),
                      key=lambda r: r["concept_id"])
        if [r["concept_id"] for r in rows] != list(range(len(rows))):
            raise ExportError(f"{root}/text/concepts.parquet: {kind} concept ids are not 0..{len(rows) - 1}")
        if len(rows) > width:
            raise ExportError(f"{len(rows)} {kind} concepts: HANet's reader holds at most {width} "
                              f"(rebuild with concepts.n_{kind}s<={width}, or export with hanet_concepts=false)")
        freq = {str(r["lemma"]): int(r["train_count"]) for r in rows}
        if len(freq) != len(rows):
            raise ExportError(f"{root}/text/concepts.parquet: repeated {kind} lemmas")
        out[kind] = freq
    return out


def concept_labels(root: Path, keys: list[str], caps_of: dict[str, list[dict]]) -> dict[str, dict]:
    """HANet's {kind}_gt and {kind}_gt_all over ``keys`` (captions in export order)."""
    rows = {r["caption_id"]: r for r in _table(root, "text/caption_labels.parquet", "caption_labels")}
    out: dict[str, dict] = {f"{k}_{w}": {} for k in ("verb", "noun") for w in ("gt", "gt_all")}
    for key in keys:
        for kind in ("verb", "noun"):
            lists = [sorted(set((rows.get(c["caption_id"]) or {}).get(f"{kind}_ids") or [])) for c in caps_of[key]]
            out[f"{kind}_gt"][key] = lists
            n = Counter(i for ids in lists for i in ids)
            top = max(n.values(), default=1)
            weights = sorted(((round(c / top, 2), i) for i, c in n.items()), reverse=True)
            out[f"{kind}_gt_all"][key] = {str(i): w for w, i in weights}
    return out


# ----------------------------------------------------------------------------- writing
def _staging(dest: Path, overwrite: bool) -> Path:
    if dest.exists():
        if not (dest / INFO).is_file():
            raise ExportError(f"{dest} exists and is not an earlier export (no {INFO}); choose an empty folder")
        if not overwrite:
            raise ExportError(f"{dest} holds an earlier export; pass overwrite=true to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"


def _commit(tmp: Path, dest: Path) -> None:
    """Swap the finished tree into place (the old export, if any, is removed after the rename)."""
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dest, old)
    os.replace(tmp, dest)
    fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_text_files(tmp: Path, paths: dict, words: list[str], by_split: dict, caps_of: dict, texts: dict,
                      root: Path) -> dict[str, Any]:
    keys = [k for s in SPLITS for k in by_split[s]]
    exported = [c["caption_id"] for k in keys for c in caps_of[k]]
    graphs, conflicts = sentence_graphs(texts, exported)
    bw.write_json(paths["ref_captions"], {k: [texts[c["caption_id"]]["text"] for c in caps_of[k]] for k in keys})
    bw.write_json(paths["rolegraphs"], graphs)
    bw.write_string_array(paths["int2word"], words)
    bw.write_json(paths["word2int"], {w: i for i, w in enumerate(words)})
    for s in SPLITS:
        bw.write_string_array(paths[f"names_{s}"], by_split[s])
    matrix, attrs = read_embeddings(root / "text/embeddings.h5")
    if matrix.shape[0] != len(words):
        raise ExportError(f"{root}/text/embeddings.h5 has {matrix.shape[0]} rows, words.parquet {len(words)} words")
    bw.write_word_embeddings(paths["embeddings"], matrix)
    return {"captions": len(exported), "sentences": len(graphs), "graph_conflicts": conflicts,
            "embedding_dim": int(matrix.shape[1]), "embedding_source": str(attrs.get("source", "?"))}


def _write_concepts(paths: dict, root: Path, keys: list[str], caps_of: dict) -> dict[str, int]:
    vocab = concept_vocab(root)
    if vocab is None:
        return {"hanet_concepts": 0}
    for kind, freq in vocab.items():
        bw.write_json(paths[f"{kind}_freq"], freq)
    for name, value in concept_labels(root, keys, caps_of).items():
        bw.write_json(paths[name], value)
    return {"hanet_concepts": 1, "verb_concepts": len(vocab["verb"]), "noun_concepts": len(vocab["noun"])}


def _write_features(tmp: Path, sets: dict, by_split: dict, source: Path) -> dict[str, dict]:
    out = {}
    for name, files in sets.items():
        folder = folder_name(name)
        if folder in {o["folder"] for o in out.values()}:
            raise ExportError(f"two feature sets map to ordered_feature/SA/{folder}; export one of them")
        info = {"folder": folder, "dim": 0, "frames": 0}
        for s in SPLITS:
            c = bw.write_feature_file(files[s], bw.feature_path(tmp, folder, s), by_split[s],
                                      {"exported_from": str(files[s].resolve()), "feature_set": name})
            if info["dim"] and c["dim"] and c["dim"] != info["dim"]:
                raise ExportError(f"feature set '{name}': width {c['dim']} in {s}, {info['dim']} elsewhere")
            info["dim"] = info["dim"] or c["dim"]
            info["frames"] += c["frames"]
        out[name] = info
    return out


def run_export(shards: str | os.PathLike, dest: str | os.PathLike, features: list[str] | None = None,
               hanet_concepts: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Write the shard tree ``shards`` under ``dest`` in the released layout; returns the export summary
    (also written to ``dest/export.json``). ``features``: feature sets to export (default: all)."""
    t0 = time.perf_counter()
    root, dest = Path(shards), Path(dest)
    if not (root / "videos.parquet").is_file():
        raise ExportError(f"{root}: not a shard tree (no videos.parquet); build it first")
    sets = feature_sets(root, features)
    words = vocabulary(root)
    texts, tcounts = text_of(root, {w: i for i, w in enumerate(words)})
    caps_of: dict[str, list[dict]] = {}
    for c in sorted(_table(root, "captions.parquet", "captions", ["caption_id", "key", "sen_id"]),
                    key=lambda c: (c["sen_id"] if c["sen_id"] is not None else -1, c["caption_id"])):
        if c["caption_id"] in texts:
            caps_of.setdefault(c["key"], []).append(c)
    by_split, left = select_videos(root, caps_of, sets)
    tmp = _staging(dest, overwrite)
    try:
        paths = bw.layout_paths(tmp)
        counts = _write_text_files(tmp, paths, words, by_split, caps_of, texts, root)
        keys = [k for s in SPLITS for k in by_split[s]]
        counts.update(_write_concepts(paths, root, keys, caps_of) if hanet_concepts else {"hanet_concepts": 0})
        feats = _write_features(tmp, sets, by_split, root)
        summary = {"source": str(root.resolve()), "dest": str(dest.resolve()), "features": feats,
                   "counts": {**counts, **tcounts, **{f"{s}_videos": len(by_split[s]) for s in SPLITS},
                              "words": len(words), "videos_left_out": len(left)},
                   "left_out": [{"key": k, "why": w} for k, w in left[:50]],
                   "embeddings_file": bw.EMBEDDINGS_FILE, "seconds": round(time.perf_counter() - t0, 3)}
        atomic_write_text(tmp / INFO, json.dumps(summary, indent=2))
        _commit(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return summary
