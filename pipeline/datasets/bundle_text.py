"""The text stages of a bundle build: concepts (HANet's own labels, or our recipe) and the vocabulary (the bundle's
int2word, ids kept). Layout, config and the other stages: pipeline/datasets/bundle.py; the plan: bundle_plan.py."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pipeline.config import BuildConfig
from pipeline.datasets.bundle import (CONCEPT_SOURCE_COMPUTED, CONCEPT_SOURCE_HANET, layout_of,
                                      read_vocabulary)
from pipeline.fingerprint import sha256_file
from pipeline.stage import StageResult
from storage import bundle as sb
from storage.bundle import BundleError, BundleLayout
from storage.tables import read_table, write_table


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


def _hanet_vocab(layout: BundleLayout, cfg: BuildConfig, per_video: dict[str, int]):
    """(ConceptVocab of HANet's concepts, kind -> {video: [[concept ids] per caption]}), checked."""
    from pipeline.text import concepts as tc

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
    return cv, gts


def _recipe_labels(root: Path, cfg: BuildConfig, caps: list[dict], gts: dict, named: bool) -> dict[int, Any]:
    """caption_id -> our recipe's concepts, for the captions HANet did not label (when lemmas are named)."""
    from pipeline.text.parse import TOKENS, concepts_per_caption

    if not named:
        return {}
    rows = read_table(root / TOKENS, "tokens", columns=["caption_id", "tokens", "pos"]).to_pylist()
    tok = {r["caption_id"]: r for r in rows}
    unlabelled = [c for c in caps if c["key"] not in gts["verb"] and c["caption_id"] in tok]
    return dict(zip((c["caption_id"] for c in unlabelled),
                    concepts_per_caption([tok[c["caption_id"]] for c in unlabelled], cfg.concepts)))


def _caption_labels(caps: list[dict], gts: dict, recipe: dict[int, Any], ids: dict) -> tuple[list[dict], list[int]]:
    """(caption label rows, [from HANet's labels, from our recipe, unlabelled] counts)."""
    from pipeline.text import concepts as tc

    labels, n = [], [0, 0, 0]
    for c in caps:
        row = {"caption_id": c["caption_id"], "key": c["key"], "split": c["split"]}
        if c["key"] in gts["verb"]:
            n[0] += 1
            j = c["sen_id"]
            row["verb_ids"] = sorted(set(gts["verb"][c["key"]][j]))
            row["noun_ids"] = sorted(set(gts["noun"].get(c["key"], [[]] * (j + 1))[j]))
        elif c["caption_id"] in recipe:
            n[1] += 1
            row.update(tc.label_ids(recipe[c["caption_id"]], ids))
        else:
            n[2] += 1
            row.update(verb_ids=[], noun_ids=[])
        labels.append(row)
    return labels, n


def import_hanet_concepts(root: Path, cfg: BuildConfig, layout: BundleLayout) -> StageResult:
    from pipeline.text import concepts as tc
    from pipeline.text.parse import CAPTION_LABELS, CONCEPTS, VIDEO_LABELS

    t0 = time.perf_counter()
    caps = read_table(root / "captions.parquet", "captions", columns=["caption_id", "key", "sen_id", "split"]).to_pylist()
    per_video: dict[str, int] = {}
    for c in caps:
        per_video[c["key"]] = per_video.get(c["key"], 0) + 1
    cv, gts = _hanet_vocab(layout, cfg, per_video)
    # captions HANet did not label (val/test): our recipe against the imported lemmas
    named = all(not lem.startswith("#") for k in tc.KINDS for lem in cv.lemmas[k])
    recipe = _recipe_labels(root, cfg, caps, gts, named)
    labels, (n_gt, n_recipe, n_none) = _caption_labels(caps, gts, recipe, {k: cv.ids(k) for k in tc.KINDS})
    meta = {"concept_source": CONCEPT_SOURCE_HANET,
            "files": json.dumps({k: str(p) for k, p in layout.concepts.items()}),
            "non_train_labels": "recipe" if named else "none"}
    write_table(root / CONCEPTS, "concepts", cv.rows(), extra_metadata=meta)
    write_table(root / CAPTION_LABELS, "caption_labels", labels, extra_metadata=meta)
    write_table(root / VIDEO_LABELS, "video_labels", tc.video_label_rows(labels), extra_metadata=meta)
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


BUNDLE_EMBEDDINGS = "bundle"


def bundle_embeddings_file(layout: BundleLayout) -> Path:
    """The reference's word-embedding init file of a bundle (``--resume_file`` in HGR's/HANet's READMEs)."""
    from storage.bundle_write import EMBEDDINGS_FILE

    hits = [layout.root / EMBEDDINGS_FILE] + sorted(layout.root.glob("results/*/word_embeds*.th")) + \
        sorted(layout.root.glob("word_embeds*.th"))
    found = next((p for p in hits if p.is_file()), None)
    if found is None:
        raise BundleError(f"vocab.embeddings='bundle' but {layout.root} has no {EMBEDDINGS_FILE} "
                          "(nor results/*/word_embeds*.th, word_embeds*.th)")
    return found


def bundle_embeddings(layout: BundleLayout, words: list[str]):
    """The bundle's own word vectors (rows = int2word ids), as an Embeddings record."""
    from pipeline.text.vocab import Embeddings
    from storage.bundle_write import read_word_embeddings

    path = bundle_embeddings_file(layout)
    matrix = read_word_embeddings(path)
    if matrix.shape[0] != len(words):
        raise BundleError(f"{path}: {matrix.shape[0]} rows, int2word.npy has {len(words)} words")
    return Embeddings(matrix, [True] * len(words), str(path), sha256_file(path), 1.0)


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
    emb = bundle_embeddings(layout, words) if cfg.vocab.embeddings == BUNDLE_EMBEDDINGS else \
        vocab.init_embeddings(words, cfg.vocab)
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
