"""Format ``hgr-bundle``: a dataset's shards from the authors' released data, no video decoding.

HGR (cshizhe/hgr_v2t) and HANet (Roc-Ng/HANet) published their annotations and frame
features as one folder (layout in :mod:`storage.bundle`). With ``dataset_root`` = that
folder, a build makes the same shard tree an extraction build makes:

* ``ingest``: videos of ``public_split/{trn,val,tst}_names.npy`` (train/val/test; a name in
  two files keeps its first split), captions from ``ref_captions.json`` in list order
  (``sen_id`` = position in the list, the index HANet's per-caption labels use);
  ``videos.path`` is empty (there is no video file). A video without captions is an
  ``error`` row.
* ``import-features`` (one task per feature folder): every split's ``*_ft.hdf5`` copied,
  one video at a time, into ``features/imported-<name>/<split>.h5`` (``<name>``:
  ``resnet152`` / ``i3d`` when the folder name says so, else the folder name), float32,
  provenance attributes (source file, its sha256, dim, bundle root); a name without a
  usable dataset is an ``error`` row of ``status.parquet`` (the build goes on).
* ``parse``: the hgr-json backend on ``sent2rolegraph.augment.json`` (the role graphs the
  authors used; spaCy only tags HGR's tokens for POS and lemmas).
* ``concepts``: HANet's ``{verb,noun}_gt.json`` when present (``bundle.concepts='auto'``):
  concept id i = the i-th entry of ``{verb,noun}_words_freq.json`` (first ``n_verbs`` /
  ``n_nouns``), train captions labelled exactly as HANet trained; val/test captions are
  labelled by our recipe against that vocabulary (lemma match). Otherwise computed as usual
  from train captions. ``concepts.parquet`` metadata ``concept_source`` records which.
* ``vocab``: ``int2word.npy`` kept as the word vocabulary (word id = position, checked
  against ``word2int.json``), so a reference checkpoint's embedding rows line up without
  remapping; embeddings per ``VocabConfig.embeddings`` over those words.

Train/evaluate with ``features='imported-resnet152'`` (or ``imported-i3d``); the model's
feature width is read from the file (2048 / 1024).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

from pipeline.config import BuildConfig
from pipeline.fingerprint import sha256_file
from pipeline.stage import StageResult
from storage import bundle as sb
from storage.bundle import BundleError, BundleLayout, locate_bundle
from storage.tables import read_table, write_table

FORMAT = "hgr-bundle"
FEATURE_STAGE = "import-features"
FEATURE_PREFIX = "imported-"
STAGES = ("ingest", FEATURE_STAGE, "parse", "concepts", "vocab")
CONCEPT_SOURCE_HANET = "hanet-gt"
CONCEPT_SOURCE_COMPUTED = "computed"


# ----------------------------------------------------------------------------- config
def feature_set_name(folder: str) -> str:
    """Feature folder of the bundle -> our feature set (a folder under features/)."""
    low = folder.lower()
    if "resnet152" in low:
        return FEATURE_PREFIX + "resnet152"
    if "i3d" in low:
        return FEATURE_PREFIX + "i3d"
    return FEATURE_PREFIX + (re.sub(r"[^a-z0-9_.-]+", "-", low).strip("-.") or "features")


def layout_of(cfg: BuildConfig) -> BundleLayout:
    return locate_bundle(cfg.ingest.dataset_root, cfg.bundle.features)


def feature_sets(layout: BundleLayout) -> dict[str, str]:
    """{our feature set: bundle folder}; two folders mapping to one name is an error."""
    out: dict[str, str] = {}
    for folder in layout.features:
        name = feature_set_name(folder)
        if name in out:
            raise BundleError(f"feature folders '{out[name]}' and '{folder}' both map to '{name}'; "
                              "choose one with bundle.features")
        out[name] = folder
    return out


def resolve_config(cfg: BuildConfig) -> BuildConfig:
    """The BuildConfig a bundle build really runs: annotation = ref_captions.json, text backend
    hgr-json on the bundle's role graphs (unless another backend or file is set explicitly), no
    extractors. Checks the layout and the small files (BundleError naming every missing piece)."""
    layout = layout_of(cfg)
    feature_sets(layout)
    read_splits(layout, cfg.bundle.allow_pickle)       # small files checked before any work
    read_vocabulary(layout, cfg.bundle.allow_pickle)
    text = cfg.text
    if "backend" not in text.model_fields_set:  # default: the bundle's own role graphs
        text = text.model_copy(update={"backend": "hgr-json"})
    if text.backend == "hgr-json" and not text.hgr_json:
        text = text.model_copy(update={"hgr_json": str(layout.files["rolegraphs"])})
    return cfg.model_copy(update={
        "ingest": cfg.ingest.model_copy(update={"format": FORMAT,
                                                "annotation": str(layout.files["ref_captions"])}),
        "text": text,
        "resnet": cfg.resnet.model_copy(update={"enabled": False}),
        "i3d": cfg.i3d.model_copy(update={"enabled": False}),
    })


# ----------------------------------------------------------------------------- ingest
def read_splits(layout: BundleLayout, allow_pickle: bool = False) -> dict[str, list[str]]:
    return {s: sb.read_string_array(layout.files[f"names_{s}"], f"{s} names", allow_pickle)
            for s in sb.SPLIT_CODES}


def read_captions(layout: BundleLayout) -> dict[str, list[str]]:
    path = layout.files["ref_captions"]
    data = sb.read_json(path, "ref_captions")
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected {{video name: [caption, ...]}}, got {type(data).__name__}")
    for name, caps in data.items():
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            raise BundleError(f"{path}: captions of '{name}' must be a list of strings")
    return data


def run_bundle_ingest(cfg: BuildConfig) -> StageResult:
    """Write videos.parquet and captions.parquet from the names files and ref_captions.json."""
    t0 = time.perf_counter()
    layout = layout_of(cfg)
    out = Path(cfg.out_root) / cfg.dataset
    splits = read_splits(layout, cfg.bundle.allow_pickle)
    refs = read_captions(layout)
    videos, captions, seen, notes = [], [], {}, []
    names_seen: dict[str, str] = {}
    dup = 0
    for split, names in splits.items():
        for name in names:
            if name in seen:
                dup += 1
                continue
            seen[name] = split
            hname = sb.dataset_name(name)
            row = {"key": name, "path": None, "split": split, "size_bytes": None, "n_frames": None, "fps": None,
                   "duration_s": None, "width": None, "height": None, "status": "ok", "error_message": None}
            if hname in names_seen:
                row.update(status="error", error_message=f"name collides with {names_seen[hname]!r} once '/' "
                           "becomes '_'")
            names_seen.setdefault(hname, name)
            caps = refs.get(name)
            if not caps:
                row.update(status="error", error_message="no captions in annotation/RET/ref_captions.json")
            videos.append(row)
            for j, text in enumerate(caps or []):
                captions.append({"caption_id": len(captions), "key": name, "sen_id": j, "split": split,
                                 "caption": text})
    if dup:
        notes.append(f"{dup} names listed in more than one split file (first split kept)")
    unlisted = sum(1 for n in refs if n not in seen)
    if unlisted:
        notes.append(f"{unlisted} videos of ref_captions.json are in no split file (ignored)")
    meta = {"format": FORMAT, "dataset_root": str(layout.root.resolve()),
            "annotation": str(layout.files["ref_captions"].resolve())}
    write_table(out / "videos.parquet", "videos", videos, extra_metadata=meta)
    write_table(out / "captions.parquet", "captions", captions, extra_metadata=meta)
    n_err = sum(v["status"] == "error" for v in videos)
    counts = {"videos": len(videos), "ok": len(videos) - n_err, "error": n_err, "captions": len(captions),
              **{f"{s}_videos": sum(v["split"] == s for v in videos) for s in sb.SPLIT_CODES},
              "duplicate_names": dup, "unlisted_videos": unlisted}
    return StageResult(outputs=["videos.parquet", "captions.parquet"], counts=counts,
                       timings_s={"ingest": round(time.perf_counter() - t0, 3)}, notes=notes)


# ----------------------------------------------------------------------------- features
def run_import_features(root: Path, cfg: BuildConfig, folder: str) -> StageResult:
    """One bundle feature folder -> features/<set>/<split>.h5 + status.parquet (every video a row)."""
    t0 = time.perf_counter()
    root = Path(root)
    layout = layout_of(cfg)
    name = feature_set_name(folder)
    videos = read_table(root / "videos.parquet", "videos", columns=["key", "split"]).to_pylist()
    status_rows, counts, outputs = [], {"videos": 0, "ok": 0, "error": 0, "dim": 0}, []
    for split, src in layout.features[folder].items():
        keys = [v["key"] for v in videos if v["split"] == split]
        sha = sha256_file(src)
        attrs = {"extractor": name, "weights": "imported", "weights_sha256": sha, "source_file": str(src.resolve()),
                 "source_sha256": sha, "bundle_root": str(layout.root.resolve()), "bundle_feature": folder,
                 "config": json.dumps({"format": FORMAT, "feature": folder, "split_file": src.name}),
                 "sampling": "as released (the bundle's frames, not re-sampled)"}
        rel = f"features/{name}/{split}.h5"
        t1 = time.perf_counter()
        result, c = sb.import_feature_file(src, root / rel, keys, attrs)
        per_video = (time.perf_counter() - t1) / max(len(keys), 1)
        outputs.append(rel)
        for v in result:
            status_rows.append({"key": v.key, "split": split, "shard": f"imported:{src.name}", "status": v.status,
                                "error_message": v.error_message, "n_decoded": None, "n_expected": None,
                                "n_features": v.n_features, "fps": None, "duration_s": None,
                                "seconds": round(per_video, 6), "warning": None})
        for k in ("videos", "ok", "error"):
            counts[k] += c[k]
        if counts["dim"] and c["dim"] and c["dim"] != counts["dim"]:
            raise BundleError(f"{folder}: feature width {c['dim']} in {src.name} differs from the other splits' "
                              f"{counts['dim']}")
        counts["dim"] = counts["dim"] or c["dim"]
        counts[f"{split}_not_in_split"] = c["datasets_not_in_split"]
    write_table(root / "features" / name / "status.parquet", "feature_status", status_rows,
                extra_metadata={"extractor": name, "format": FORMAT, "bundle_feature": folder})
    outputs.append(f"features/{name}/status.parquet")
    notes = [f"{counts['error']} videos without usable '{folder}' features (status rows)"] if counts["error"] else []
    return StageResult(outputs=outputs, counts=counts, timings_s={"import": round(time.perf_counter() - t0, 3)},
                       notes=notes)


# ----------------------------------------------------------------------------- vocabulary
def read_vocabulary(layout: BundleLayout, allow_pickle: bool = False) -> list[str]:
    """int2word.npy, checked against word2int.json (every word at its id, no duplicates)."""
    words = sb.read_string_array(layout.files["int2word"], "int2word", allow_pickle)
    w2i = sb.read_json(layout.files["word2int"], "word2int")
    if not isinstance(w2i, dict):
        raise BundleError(f"{layout.files['word2int']}: expected {{word: id}}")
    if len(words) < 3:
        raise BundleError(f"{layout.files['int2word']}: {len(words)} words; ids 0-2 are BOS/EOS/UNK, so at least 3")
    if len(set(words)) != len(words):
        raise BundleError(f"{layout.files['int2word']}: repeated words")
    wrong = [(w, w2i.get(w), i) for i, w in enumerate(words) if w2i.get(w) != i]
    if wrong or len(w2i) != len(words):
        detail = (f"'{wrong[0][0]}' has id {wrong[0][1]} in word2int.json, {wrong[0][2]} in int2word.npy"
                  if wrong else f"{len(w2i)} words in word2int.json, {len(words)} in int2word.npy")
        raise BundleError(f"word2int.json and int2word.npy disagree: {detail}")
    return words
