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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipeline.fingerprint import code_version, file_fingerprint, sha256_file
from pipeline.stage import BuildFailedError, StageResult, run_stage, stage_key, too_many_failed
from pipeline.config import BuildConfig
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


# ----------------------------------------------------------------------------- concepts
def _concept_vocab(layout: BundleLayout, kind: str, k: int, gt: dict) -> tuple[list[str], list[int]]:
    """(lemmas, train counts) of HANet's first ``k`` concepts of ``kind``."""
    path = layout.concepts.get(f"{kind}_freq")
    if path is not None:
        freq = sb.read_json(path, f"{kind} concept frequencies")
        if not isinstance(freq, dict):
            raise BundleError(f"{path}: expected {{lemma: count}} ordered by frequency")
        items = list(freq.items())[:k]
        return [str(w) for w, _ in items], [int(n) for _, n in items]
    # no frequency file: ids without names; width = k (HANet's head size) or the largest id seen
    top = max((i for caps in gt.values() for ids in caps for i in ids), default=-1)
    n = max(k, top + 1)
    counts = [0] * n
    for caps in gt.values():
        for ids in caps:
            for i in ids:
                counts[i] += 1
    return [f"#{i}" for i in range(n)], counts


def _read_gt(layout: BundleLayout, kind: str) -> dict[str, list[list[int]]]:
    path = layout.concepts[f"{kind}_gt"]
    data = sb.read_json(path, f"HANet {kind} labels")
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected {{video: [[concept ids] per caption]}}")
    for name, caps in data.items():
        if not isinstance(caps, list) or not all(isinstance(ids, list) and all(isinstance(i, int) and i >= 0
                                                                               for i in ids) for ids in caps):
            raise BundleError(f"{path}: labels of '{name}' must be lists of non-negative concept ids per caption")
    return data


def import_hanet_concepts(root: Path, cfg: BuildConfig, layout: BundleLayout) -> StageResult:
    from pipeline.text import concepts as tc
    from pipeline.text.parse import CAPTION_LABELS, CONCEPTS, TOKENS, VIDEO_LABELS, concepts_per_caption

    t0 = time.perf_counter()
    caps = read_table(root / "captions.parquet", "captions", columns=["caption_id", "key", "sen_id", "split"]).to_pylist()
    per_video: dict[str, int] = {}
    for c in caps:
        per_video[c["key"]] = per_video.get(c["key"], 0) + 1
    cv = tc.ConceptVocab()
    gts = {}
    for kind, k in (("verb", cfg.concepts.n_verbs), ("noun", cfg.concepts.n_nouns)):
        gts[kind] = _read_gt(layout, kind)
        cv.lemmas[kind], cv.counts[kind] = _concept_vocab(layout, kind, k, gts[kind])
        width = len(cv.lemmas[kind])
        for name, lists in gts[kind].items():
            if name in per_video and len(lists) != per_video[name]:
                raise BundleError(f"{layout.concepts[kind + '_gt'].name}: '{name}' has {len(lists)} caption label "
                                  f"lists, ref_captions.json {per_video[name]} captions")
            bad = [i for ids in lists for i in ids if i >= width]
            if bad:
                raise BundleError(f"{layout.concepts[kind + '_gt'].name}: '{name}' uses concept id {bad[0]}, "
                                  f"beyond the {width} {kind} concepts")
    # captions HANet did not label (val/test): our recipe against the imported lemmas
    named = all(not lem.startswith("#") for k in tc.KINDS for lem in cv.lemmas[k])
    tok = {}
    if named:
        rows = read_table(root / TOKENS, "tokens", columns=["caption_id", "tokens", "pos"]).to_pylist()
        tok = {r["caption_id"]: r for r in rows}
    ids = {k: cv.ids(k) for k in tc.KINDS}
    labels, n_gt, n_recipe, n_none = [], 0, 0, 0
    unlabelled = [c for c in caps if c["key"] not in gts["verb"] and c["caption_id"] in tok]
    recipe = dict(zip((c["caption_id"] for c in unlabelled),
                      concepts_per_caption([tok[c["caption_id"]] for c in unlabelled], cfg.concepts)))
    for c in caps:
        row = {"caption_id": c["caption_id"], "key": c["key"], "split": c["split"]}
        if c["key"] in gts["verb"]:
            n_gt += 1
            j = c["sen_id"]
            row["verb_ids"] = sorted(set(gts["verb"][c["key"]][j]))
            row["noun_ids"] = sorted(set(gts["noun"].get(c["key"], [[]] * (j + 1))[j]))
        elif c["caption_id"] in recipe:
            n_recipe += 1
            row.update(tc.label_ids(recipe[c["caption_id"]], ids))
        else:
            n_none += 1
            row.update(verb_ids=[], noun_ids=[])
        labels.append(row)
    videos = tc.video_label_rows(labels)
    meta = {"concept_source": CONCEPT_SOURCE_HANET,
            "files": json.dumps({k: str(p) for k, p in layout.concepts.items()}),
            "non_train_labels": "recipe" if named else "none"}
    write_table(root / CONCEPTS, "concepts", cv.rows(), extra_metadata=meta)
    write_table(root / CAPTION_LABELS, "caption_labels", labels, extra_metadata=meta)
    write_table(root / VIDEO_LABELS, "video_labels", videos, extra_metadata=meta)
    train_missing = sum(1 for c in caps if c["split"] == "train" and c["key"] not in gts["verb"])
    notes = [f"concepts imported from HANet's {{verb,noun}}_gt.json ({n_gt} captions); "
             f"{n_recipe} other captions labelled by our recipe against that vocabulary"]
    if not named:
        notes.append("no {verb,noun}_words_freq.json: concepts have ids but no lemmas; other splits unlabelled")
    if train_missing:
        notes.append(f"{train_missing} train captions belong to videos HANet's labels do not cover (no labels)")
    return StageResult(
        outputs=[CONCEPTS, CAPTION_LABELS, VIDEO_LABELS],
        counts={"imported": 1, "verbs": len(cv.lemmas["verb"]), "nouns": len(cv.lemmas["noun"]),
                "captions_from_gt": n_gt, "captions_from_recipe": n_recipe, "captions_unlabelled": n_none,
                "train_captions_without_gt": train_missing},
        timings_s={"concepts": round(time.perf_counter() - t0, 3)}, notes=notes)


def concept_mode(cfg: BuildConfig, layout: BundleLayout) -> str:
    """'hanet' (import) or 'compute', per bundle.concepts and the files present."""
    mode = cfg.bundle.concepts
    if mode == "compute":
        return "compute"
    if layout.has_hanet_concepts:
        return "hanet"
    if mode == "hanet":
        absent = [f"{k}_gt.json" for k in ("verb", "noun") if f"{k}_gt" not in layout.concepts]
        raise BundleError(f"bundle.concepts='hanet' but {', '.join(absent)} not found under "
                          f"{', '.join(d + '/' for d in sb.CONCEPT_DIRS)} of {layout.root}")
    return "compute"


def run_bundle_concepts(root: Path, cfg: BuildConfig) -> StageResult:
    """HANet's concept labels when the bundle has them (see concept_mode), else our recipe."""
    from pipeline.text import parse as text_parse
    from storage.tables import table_metadata

    root = Path(root)
    layout = layout_of(cfg)
    if concept_mode(cfg, layout) == "hanet":
        return import_hanet_concepts(root, cfg, layout)
    res = text_parse.run_concepts(root, cfg.concepts)
    # record the source in every concept table (rewritten with the extra metadata)
    for rel, name in ((text_parse.CONCEPTS, "concepts"), (text_parse.CAPTION_LABELS, "caption_labels"),
                      (text_parse.VIDEO_LABELS, "video_labels")):
        meta = {k: v for k, v in table_metadata(root / rel).items() if not k.startswith(("schema_", "ARROW"))}
        write_table(root / rel, name, read_table(root / rel, name),
                    extra_metadata={**meta, "concept_source": CONCEPT_SOURCE_COMPUTED})
    res.counts = {**res.counts, "imported": 0}
    res.notes = ["concepts computed from train captions (no HANet {verb,noun}_gt.json used)", *res.notes]
    return res


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


def run_bundle_vocab(root: Path, cfg: BuildConfig) -> StageResult:
    """text/words.parquet = the bundle's vocabulary (word id = int2word position), + embeddings."""
    from pipeline.text import vocab
    from pipeline.text.parse import EMBEDDINGS, TOKENS, WORDS
    from storage.text import write_embeddings

    t0 = time.perf_counter()
    root = Path(root)
    layout = layout_of(cfg)
    words = read_vocabulary(layout, cfg.bundle.allow_pickle)
    index = {w: i for i, w in enumerate(words)}
    counts = [0] * len(words)
    n_tok = n_unk = 0
    for r in read_table(root / TOKENS, "tokens", columns=["split", "tokens"]).to_pylist():
        if r["split"] != "train":
            continue
        for t in r["tokens"] or []:
            i = index.get(t, index.get(t.lower()))  # the data loader's lookup: exact, then lower-cased
            n_tok += 1
            if i is None:
                n_unk += 1
            else:
                counts[i] += 1
    emb = vocab.init_embeddings(words, cfg.vocab)
    write_table(root / WORDS, "words", [
        {"word_id": i, "word": w, "train_count": counts[i], "in_embeddings": emb.found[i]} for i, w in enumerate(words)],
        extra_metadata={"source": "hgr-bundle int2word.npy", "sha256": sha256_file(layout.files["int2word"])})
    write_embeddings(root / EMBEDDINGS, emb.matrix, {
        "source": emb.source, "source_sha256": emb.sha256, "dim": emb.dim, "coverage": emb.coverage,
        "n_found": sum(emb.found), "n_words": len(words), "specials": words[:3], "seed": cfg.vocab.seed,
        "vocabulary": "hgr-bundle int2word.npy"})
    unk_bp = round(10000 * n_unk / max(n_tok, 1))
    return StageResult(
        outputs=[WORDS, EMBEDDINGS],
        counts={"words": len(words), "found": sum(emb.found), "dim": emb.dim, "train_tokens": n_tok,
                "train_tokens_unknown": n_unk, "unknown_bp": unk_bp},
        timings_s={"vocab": round(time.perf_counter() - t0, 3)},
        notes=[f"bundle vocabulary kept ({len(words)} words); {n_unk} of {n_tok} train tokens not in it; "
               f"embeddings {emb.source}"])


# ----------------------------------------------------------------------------- plan
@dataclass
class Step:
    """One stage (or one feature folder) of a bundle build, with its cache key."""

    stage: str
    key: str
    fn: Callable[..., StageResult]
    kwargs: dict[str, Any]
    config: Any
    inputs: dict[str, Any]
    code: str
    shard: str | None = None
    after: list[str] = field(default_factory=list)   # stage names this one reads from

    @property
    def id(self) -> str:
        return f"{self.stage}/{self.shard}" if self.shard else self.stage


def _bundle_code() -> str:
    import sys

    return code_version(sys.modules[__name__], sb)


def _text_code() -> str:
    from pipeline.text import concepts, hgr_json, lemmas, parse, resources, roles, vocab

    return code_version(parse, roles, hgr_json, lemmas, concepts, vocab, resources)


def plan(cfg: BuildConfig) -> list[Step]:
    """Every step of a bundle build in dependency order (``cfg`` as :func:`resolve_config` gives)."""
    layout = layout_of(cfg)
    root = Path(cfg.out_root) / cfg.dataset
    code, tcode = _bundle_code(), _text_code()
    sha = {k: sha256_file(p) for k, p in layout.files.items() if k != "rolegraphs" and not k.startswith("int2")}
    ing_inputs = {"ref_captions": sha["ref_captions"], **{k: v for k, v in sha.items() if k.startswith("names_")},
                  "root": str(layout.root.resolve())}
    ing_cfg = {"ingest": cfg.ingest.model_dump(mode="json"), "allow_pickle": cfg.bundle.allow_pickle}
    ing = Step("ingest", stage_key("ingest", ing_cfg, code, ing_inputs), run_bundle_ingest, {"cfg": cfg},
               ing_cfg, ing_inputs, code)
    steps = [ing]
    for name, folder in feature_sets(layout).items():
        inputs = {"ingest": ing.key, "files": {s: file_fingerprint(p) for s, p in layout.features[folder].items()}}
        steps.append(Step(FEATURE_STAGE, stage_key(FEATURE_STAGE, {"feature": folder}, code, inputs),
                          run_import_features, {"root": root, "cfg": cfg, "folder": folder}, {"feature": folder},
                          inputs, code, shard=name, after=["ingest"]))
    from pipeline.text.parse import run_parse

    p_inputs = {"ingest": ing.key, "rolegraphs": sha256_file(cfg.text.hgr_json) if cfg.text.hgr_json else None}
    parse = Step("parse", stage_key("parse", cfg.text, tcode, p_inputs), run_parse, {"root": root, "cfg": cfg.text},
                 cfg.text, p_inputs, tcode, after=["ingest"])
    steps.append(parse)
    mode = concept_mode(cfg, layout)
    c_inputs = {"parse": parse.key, "mode": mode,
                "files": {k: sha256_file(p) for k, p in sorted(layout.concepts.items())} if mode == "hanet" else {}}
    c_cfg = {"concepts": cfg.concepts.model_dump(mode="json"), "bundle_concepts": cfg.bundle.concepts}
    steps.append(Step("concepts", stage_key("concepts", c_cfg, code + tcode, c_inputs), run_bundle_concepts,
                      {"root": root, "cfg": cfg}, c_cfg, c_inputs, code + tcode, after=["parse"]))
    v_inputs = {"parse": parse.key, "int2word": sha256_file(layout.files["int2word"]),
                "word2int": sha256_file(layout.files["word2int"])}
    v_cfg = {"vocab": cfg.vocab.model_dump(mode="json"), "allow_pickle": cfg.bundle.allow_pickle}
    steps.append(Step("vocab", stage_key("vocab", v_cfg, code + tcode, v_inputs), run_bundle_vocab,
                      {"root": root, "cfg": cfg}, v_cfg, v_inputs, code + tcode, after=["parse"]))
    return steps


def build_bundle(cfg: BuildConfig, force: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """Run a whole bundle build in this process (no Prefect), committed stage by stage.

    The ``build-features`` flow runs the same :func:`plan` as Prefect tasks. Returns
    {'root', 'stages': [{stage, shard, executed, counts}], 'config'}.
    """
    from storage.atomic import atomic_write_text, clean_stale_tmp
    from storage.lock import exclusive_lock

    cfg = resolve_config(cfg)
    root = Path(cfg.out_root) / cfg.dataset
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    with exclusive_lock(root / ".build.lock"):
        clean_stale_tmp(root)
        atomic_write_text(root / "build_config.json", cfg.model_dump_json(indent=2))
        for step in plan(cfg):
            manifest, executed = run_stage(root, step.stage, step.key, lambda s=step: s.fn(**s.kwargs),
                                           config=step.config, inputs=step.inputs, code=step.code,
                                           shard=step.shard, force=step.stage in force)
            rows.append({"stage": step.stage, "shard": step.shard or "", "executed": executed,
                         "counts": manifest.counts})
    return {"root": str(root), "stages": rows, "config": cfg}


def import_failure_summary(root: Path) -> tuple[int, int, dict[str, int]]:
    """(videos, videos without imported features in some feature set, error kinds -> count)."""
    failed: dict[str, str | None] = {}
    keys: set[str] = set()
    for path in sorted((root / "features").glob(f"{FEATURE_PREFIX}*/status.parquet")):
        for r in read_table(path, "feature_status", columns=["key", "status", "error_message"]).to_pylist():
            keys.add(r["key"])
            if r["status"] != "ok":
                failed.setdefault(r["key"], r["error_message"])
    kinds: dict[str, int] = {}
    for msg in failed.values():
        kind = "no feature dataset" if (msg or "").startswith("no feature dataset") else "unusable feature dataset"
        kinds[kind] = kinds.get(kind, 0) + 1
    return len(keys), len(failed), kinds


def check_import_failures(root: Path, cfg: BuildConfig) -> None:
    """Raise :class:`BuildFailedError` when too many videos have no usable features in the bundle."""
    n, n_failed, kinds = import_failure_summary(root)
    if too_many_failed(n, n_failed, cfg.max_failed_fraction):
        raise BuildFailedError(
            f"{n_failed} of {n} videos have no usable features in the bundle (more than max_failed_fraction="
            f"{cfg.max_failed_fraction:g}): {', '.join(f'{k}: {v}' for k, v in kinds.items())}. Per-video "
            f"messages: {root}/features/{FEATURE_PREFIX}*/status.parquet")
