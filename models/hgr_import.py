"""Import a cshizhe/hgr_v2t checkpoint (RoleGraphMatchModel, ModelBase.save_checkpoint) as our HGR.

The reference saves ``{'video_encoder': state_dict, 'text_encoder': state_dict}``. Mapping
(reference -> models.hgr.HGR):

  video_encoder.level_embeds.{k}.*         -> video.levels.{k}.*       (k = 0 event, 1 action, 2 entity)
  video_encoder.ft_attn.*                  -> video.attn_pool.proj.*
  text_encoder.embedding.we.weight         -> text.rnn.embedding.weight (rows remapped with vocab+shards)
  text_encoder.rnn.*                       -> text.rnn.gru.*
  text_encoder.ft_attn.*                   -> text.attn_pool.proj.*
  text_encoder.role_embedding.weight       -> text.role_embedding.weight (rows permuted: the reference
                                              orders roles V, ARG1, ARG0, ...; models.batch.ROLES V, ARG0, ARG1, ...)
  text_encoder.gcn.layers.{k}.ctx_layer    -> text.gcn.{k}.ctx
  text_encoder.gcn.layers.{k}.layernorm    -> text.gcn.{k}.norm
  text_encoder.gcn.layers.{k}.edge_attn_query / edge_attn_key -> text.gcn.{k}.query / key

Shapes (feat_dim, joint_dim, vocab, word_dim, gcn_num_layers, gcn_attention, gcn_attn_dim) are
read from the source. The reader-side facts the reference applies (max 30 words, 4 verbs,
6 nouns, 20 frames; root->verb and verb<->argument edges, row-normalised) are this project's
HGRConfig defaults (graph_edges='reference').

Reuses models.import_reference's helpers (source splitting, role permutation) and models.import_vocab's
word-row remap rather than repeating them. Pure functions over the loaded dict (HGR's registered importer,
:func:`import_hgr_state`); reading files and writing the checkpoint are pipeline.learn.checkpoint_import's
(``vtr import-checkpoint --model hgr SRC.th DST.pt [--vocab int2word.npy --shards ROOT]``).
"""
from __future__ import annotations

import json
import re

import torch
from torch import Tensor

from .hgr import HGR
from .import_reference import role_permutation, split_source
from .import_vocab import fingerprint, remap_word_rows
from .model_configs import HGRConfig

_RULES: tuple[tuple[str, str], ...] = (
    (r"^video_encoder\.level_embeds\.(\d+)\.", r"video.levels.\1."),
    (r"^video_encoder\.ft_attn\.", "video.attn_pool.proj."),
    (r"^text_encoder\.embedding\.we\.weight$", "text.rnn.embedding.weight"),
    (r"^text_encoder\.rnn\.", "text.rnn.gru."),
    (r"^text_encoder\.ft_attn\.", "text.attn_pool.proj."),
    (r"^text_encoder\.role_embedding\.weight$", "text.role_embedding.weight"),
    (r"^text_encoder\.gcn\.layers\.(\d+)\.ctx_layer\.", r"text.gcn.\1.ctx."),
    (r"^text_encoder\.gcn\.layers\.(\d+)\.layernorm\.", r"text.gcn.\1.norm."),
    (r"^text_encoder\.gcn\.layers\.(\d+)\.edge_attn_query\.", r"text.gcn.\1.query."),
    (r"^text_encoder\.gcn\.layers\.(\d+)\.edge_attn_key\.", r"text.gcn.\1.key."),
)


def our_key(ref_key: str) -> str | None:
    for pat, rep in _RULES:
        if re.match(pat, ref_key):
            return re.sub(pat, rep, ref_key)
    return None


def infer_config(parts: dict[str, dict[str, Tensor]], cfg: HGRConfig) -> HGRConfig:
    v, t = parts["video_encoder"], parts["text_encoder"]
    if "level_embeds.1.weight" not in v:
        raise ValueError("reference video encoder with share_enc=True (one level) is not supported")
    w = v["level_embeds.0.weight"]
    layers = sorted({int(m.group(1)) for k in t if (m := re.match(r"gcn\.layers\.(\d+)\.", k))})
    attention = "gcn.layers.0.edge_attn_query.weight" in t
    upd = {"feat_dim": int(w.shape[1]), "joint_dim": int(w.shape[0]),
           "vocab_size": int(t["embedding.we.weight"].shape[0]), "word_dim": int(t["embedding.we.weight"].shape[1]),
           "gcn_num_layers": len(layers), "gcn_attention": attention if layers else cfg.gcn_attention}
    if layers and attention:
        upd["gcn_attn_dim"] = int(t["gcn.layers.0.edge_attn_query.weight"].shape[0])
    return cfg.model_copy(update=upd)


def map_hgr_state_dict(parts: dict[str, dict[str, Tensor]], model: torch.nn.Module) -> tuple[dict[str, Tensor], dict]:
    """Reference {encoder: state_dict} -> (our state dict, report of missing/unexpected/shape errors)."""
    ours = model.state_dict()
    out: dict[str, Tensor] = {}
    unexpected, shape_errors = [], []
    for enc, sd in parts.items():
        for k, val in sd.items():
            key = our_key(f"{enc}.{k}")
            if key is None or key not in ours:
                unexpected.append(f"{enc}.{k}")
                continue
            if key == "text.role_embedding.weight":
                val = val[role_permutation()]
            if tuple(val.shape) != tuple(ours[key].shape):
                shape_errors.append(f"{enc}.{k} {tuple(val.shape)} -> {key} {tuple(ours[key].shape)}")
                continue
            out[key] = val.detach().to(ours[key].dtype).clone()
    missing = sorted(set(ours) - set(out))
    return out, {"missing": missing, "unexpected": unexpected, "shape_errors": shape_errors,
                 "n_tensors": len(out)}


def import_hgr_state(source: dict, cfg: HGRConfig | None = None, *, strict: bool = True,
                     build_vocab: dict[str, list[str]] | None = None,
                     reference_words: list[str] | None = None) -> dict:
    """Map a reference HGR checkpoint (``source``: its loaded dict of state dicts) onto HGR(cfg):
    ``{"model", "config", "result", "checkpoint"}`` as models.import_reference.import_hanet_state.
    ``reference_words`` (the reference's words in id order) + ``build_vocab`` (the build's words and
    concept lists): the embedding rows are remapped onto the build's words (missing words get the
    reference's UNK row); the result then records the build's vocabulary fingerprints (HGR uses no
    concepts, so it is valid for the build's concept lists)."""
    if not isinstance(source, dict):
        raise ValueError(f"expected a dict of state dicts, got {type(source).__name__}")
    parts = split_source(source)
    cfg = infer_config(parts, cfg or HGRConfig())
    record: dict = {"words": None, "verb": None, "noun": None}
    remap: dict = {}
    if reference_words is not None and build_vocab is None:
        raise ValueError("remapping the word vocabulary needs the build's vocabularies it is for (build_vocab=...)")
    if build_vocab is not None:
        if reference_words is not None:
            emb = parts["text_encoder"]["embedding.we.weight"]
            parts["text_encoder"]["embedding.we.weight"], remap["words"] = remap_word_rows(
                emb, reference_words, build_vocab["words"])
            record["words"] = fingerprint(build_vocab["words"])
            cfg = cfg.model_copy(update={"vocab_size": len(build_vocab["words"])})
        for kind in ("verb", "noun"):  # unused by HGR: valid for whatever concepts the build holds
            record[kind] = fingerprint(build_vocab[kind]) if build_vocab.get(kind) else None
    model = HGR(cfg)
    sd, report = map_hgr_state_dict(parts, model)
    ok = not (report["missing"] or report["unexpected"] or report["shape_errors"])
    if strict and not ok:
        raise ValueError(f"the checkpoint does not fit HGR({cfg!r}): {report}")
    model.load_state_dict(sd, strict=False)
    result = {**report, "ok": ok, "hgr_config": cfg.model_dump(mode="json"), "vocab": record, "remap": remap}
    return {"model": model, "config": cfg, "result": result, "checkpoint": {"import_report_json": json.dumps(report)}}
