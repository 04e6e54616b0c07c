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

Reuses models.import_reference's helpers (source splitting, role permutation, word-row remap,
shard vocabularies) rather than repeating them.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
from torch import Tensor

from .config import TrainConfig
from .import_reference import _role_permutation, _split_source
from .import_vocab import fingerprint, read_reference_words, remap_word_rows, shard_vocabularies
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
                val = val[_role_permutation()]
            if tuple(val.shape) != tuple(ours[key].shape):
                shape_errors.append(f"{enc}.{k} {tuple(val.shape)} -> {key} {tuple(ours[key].shape)}")
                continue
            out[key] = val.detach().to(ours[key].dtype).clone()
    missing = sorted(set(ours) - set(out))
    return out, {"missing": missing, "unexpected": unexpected, "shape_errors": shape_errors,
                 "n_tensors": len(out)}


def import_hgr_checkpoint(src_path: str | Path, dst_path: str | Path | None, cfg: HGRConfig | None = None,
                          strict: bool = True, *, vocab: str | Path | None = None,
                          shards: str | Path | None = None) -> dict:
    """Read a reference HGR checkpoint, map it onto HGR(cfg), optionally save it in this project's
    checkpoint format (model_name 'hgr'; ``vtr evaluate`` reads it). ``vocab`` (the reference's
    int2word.npy / word2int.json) + ``shards``: the embedding rows are remapped onto the shards'
    words (missing words get the reference's UNK row); the checkpoint then records the shards'
    vocabulary fingerprints (HGR uses no concepts, so it is valid for the shards' concept lists)."""
    src_path = Path(src_path)
    from storage.checkpoints import load_torch_file

    obj = load_torch_file(src_path)
    if not isinstance(obj, dict):
        raise ValueError(f"{src_path}: expected a dict of state dicts, got {type(obj).__name__}")
    parts = _split_source(obj)
    cfg = infer_config(parts, cfg or HGRConfig())
    record: dict = {"words": None, "verb": None, "noun": None, "remapped_for": None}
    remap: dict = {}
    if vocab is not None and shards is None:
        raise ValueError("remapping the word vocabulary needs the shard tree it is for (shards=...)")
    if shards is not None:
        build = shard_vocabularies(shards)
        record["remapped_for"] = str(Path(shards))
        if vocab is not None:
            emb = parts["text_encoder"]["embedding.we.weight"]
            parts["text_encoder"]["embedding.we.weight"], remap["words"] = remap_word_rows(
                emb, read_reference_words(vocab), build["words"])
            record["words"] = fingerprint(build["words"])
            cfg = cfg.model_copy(update={"vocab_size": len(build["words"])})
        for kind in ("verb", "noun"):  # unused by HGR: valid for whatever concepts the shards hold
            record[kind] = fingerprint(build[kind]) if build[kind] else None
    from .registry import create_model

    model = create_model("hgr", cfg)
    sd, report = map_hgr_state_dict(parts, model)
    ok = not (report["missing"] or report["unexpected"] or report["shape_errors"])
    if strict and not ok:
        raise ValueError(f"{src_path} does not fit HGR({cfg!r}): {report}")
    model.load_state_dict(sd, strict=False)
    result = {**report, "source": str(src_path), "hgr_config": cfg.model_dump(mode="json"), "vocab": record,
              "remap": remap}
    if dst_path is not None:
        from storage.checkpoints import save_checkpoint

        save_checkpoint(dst_path, {
            "model_name": "hgr", "config_json": TrainConfig(model="hgr", hgr=cfg).model_dump_json(),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "epoch": -1,
            "imported_from": str(src_path), "import_report_json": json.dumps(report), "vocab": record,
        })
        result["destination"] = str(dst_path)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="import a cshizhe/hgr_v2t checkpoint as this project's HGR")
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--config", default="", help="JSON file of HGRConfig fields (caps etc.)")
    ap.add_argument("--vocab", default=None, help="the reference's int2word.npy or word2int.json")
    ap.add_argument("--shards", default=None, help="shard tree whose text/words.parquet the embedding is remapped onto")
    a = ap.parse_args(argv)
    cfg = HGRConfig.model_validate_json(Path(a.config).read_text()) if a.config else HGRConfig()
    res = import_hgr_checkpoint(a.src, a.dst, cfg, vocab=a.vocab, shards=a.shards)
    print(json.dumps({k: res[k] for k in ("n_tensors", "missing", "unexpected", "shape_errors", "destination")},
                     indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
