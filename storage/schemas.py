"""Arrow schemas of every Parquet table in a shard tree (the contract between stages).

Each table carries ``schema_name`` and ``schema_version`` in its Parquet
metadata; :func:`storage.tables.read_table` checks both. Bump a version
whenever a field changes meaning or type. Documented in docs/shards.md.
"""
from __future__ import annotations

import pyarrow as pa

NODE = pa.struct([("role", pa.string()), ("spans", pa.list_(pa.int32())), ("words", pa.string())])
EDGE = pa.struct([("src", pa.int32()), ("dst", pa.int32()), ("role", pa.string())])

SCHEMAS: dict[str, tuple[int, pa.Schema]] = {
    # ingest: one row per video of the dataset, header probe included; mtime_ns: the file's
    # modification time when probed (with size_bytes: what a rerun compares to reuse the probe);
    # resolved_path: where a symlink inside dataset_root led (null when the file is no link)
    "videos": (2, pa.schema([
        ("key", pa.string()), ("path", pa.string()), ("split", pa.string()),
        ("size_bytes", pa.int64()), ("n_frames", pa.int64()), ("fps", pa.float64()),
        ("duration_s", pa.float64()), ("width", pa.int32()), ("height", pa.int32()),
        ("status", pa.string()), ("error_message", pa.string()),
        ("mtime_ns", pa.int64()), ("resolved_path", pa.string()),
    ])),
    # ingest: one row per caption; caption_id is the global, stable row id
    "captions": (1, pa.schema([
        ("caption_id", pa.int64()), ("key", pa.string()), ("sen_id", pa.int64()),
        ("split", pa.string()), ("caption", pa.string()),
    ])),
    # feature stages: one row per video and extractor (what the decode really gave);
    # warning: non-fatal finding on an ok row (e.g. the header overstates the frame count)
    "feature_status": (2, pa.schema([
        ("key", pa.string()), ("split", pa.string()), ("shard", pa.string()),
        ("status", pa.string()), ("error_message", pa.string()),
        ("n_decoded", pa.int64()), ("n_expected", pa.int64()), ("n_features", pa.int64()),
        ("fps", pa.float64()), ("duration_s", pa.float64()), ("seconds", pa.float64()),
        ("warning", pa.string()),
    ])),
    # text: tokens, POS and lemmas of every caption (pipeline/text/parse.py). tokens = spaCy
    # tokens of the cleaned caption (the list role-graph spans index into; hgr-json: HGR's
    # tokens); pos = Penn Treebank tags; lemmas = WordNet lemmas (NN*/VB*/JJ*/RB*), else the
    # lowercased token. status: ok | empty | truncated | error (message in error_message)
    "tokens": (1, pa.schema([
        ("caption_id", pa.int64()), ("key", pa.string()), ("split", pa.string()),
        ("status", pa.string()), ("error_message", pa.string()),
        ("tokens", pa.list_(pa.string())), ("pos", pa.list_(pa.string())),
        ("lemmas", pa.list_(pa.string())),
    ])),
    # text: semantic-role graph per caption; node index = position in `nodes`;
    # spans index into `tokens`; edges go verb node -> argument node; roles from the
    # 16-role set; node words = its tokens joined by spaces; the root (whole sentence)
    # is implicit, not a node; fallback = no SRL frame (NOUN/V nodes, no edges);
    # backend = spacy-dep | hgr-json; status as in 'tokens'
    "role_graphs": (1, pa.schema([
        ("caption_id", pa.int64()), ("key", pa.string()), ("split", pa.string()),
        ("status", pa.string()), ("error_message", pa.string()), ("backend", pa.string()),
        ("tokens", pa.list_(pa.string())),
        ("nodes", pa.list_(NODE)), ("edges", pa.list_(EDGE)), ("fallback", pa.bool_()),
    ])),
    # text: concept vocabularies (kind = verb | noun), ids dense from 0 per kind, in
    # (train_count desc, lemma) order; counts over train captions only
    "concepts": (1, pa.schema([
        ("kind", pa.string()), ("concept_id", pa.int32()), ("lemma", pa.string()),
        ("train_count", pa.int64()),
    ])),
    # text: per-caption concept ids (multi-hot as id lists)
    "caption_labels": (1, pa.schema([
        ("caption_id", pa.int64()), ("key", pa.string()), ("split", pa.string()),
        ("verb_ids", pa.list_(pa.int32())), ("noun_ids", pa.list_(pa.int32())),
    ])),
    # text: per-video union of its captions' concept ids
    "video_labels": (1, pa.schema([
        ("key", pa.string()), ("split", pa.string()),
        ("verb_ids", pa.list_(pa.int32())), ("noun_ids", pa.list_(pa.int32())),
    ])),
    # text: word vocabulary; rows ordered by word_id (special tokens first: 0 <bos>,
    # 1 <eos> = padding, 2 <unk>); words = lowercased tokens; train_count over train
    # captions; in_embeddings = row initialised from the pretrained source
    "words": (1, pa.schema([
        ("word_id", pa.int32()), ("word", pa.string()), ("train_count", pa.int64()),
        ("in_embeddings", pa.bool_()),
    ])),
}


def schema(name: str) -> pa.Schema:
    return SCHEMAS[name][1]


def version(name: str) -> int:
    return SCHEMAS[name][0]
