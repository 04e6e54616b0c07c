"""Import a checkpoint of the reference implementation (Roc-Ng/HANet) into our HANet.

The reference saves ``{'video_encoder': state_dict, 'text_encoder': state_dict}``
(framework/modelbase.py save_checkpoint). A flat dict with ``video_encoder.``/``text_encoder.``
prefixes is accepted too. Its layout (MSR-VTT sizes):

video_encoder (t2vretrieval/encoders/mlvideo.py, MultilevelEncoder)
  level_embeds.{0,1,2}   Linear(2048->1024)  event / action / entity    -> video.fc_event/_action/_entity
  ft_attn                Linear(1024->1)     event attention pooling     -> video.attn_pool.proj
  classifier_verb.0      Conv1d(1024->512, k=5)                          -> video.verb_head.conv
  bn_verb == classifier_verb.1   BatchNorm1d(512) (listed twice)         -> video.verb_head.bn
  classifier_noun.0      Conv1d(1024->1024, k=1)                         -> video.noun_head.conv
  bn_noun == classifier_noun.1   BatchNorm1d(1024) (listed twice)        -> video.noun_head.bn
  seblock1.fc.{0,2}      SE on the action stream (no bias)               -> video.se_action.fc1/fc2
  seblock2.fc.{0,2}      SE on the entity stream                         -> video.se_entity.fc1/fc2
  conv1.0, conv2.0       Conv1d(1024->1024, k=1), never used in forward  -> dropped
text_encoder (t2vretrieval/encoders/mlsent.py, RoleGraphEncoder)
  embedding.we           Embedding(vocab, 300)                           -> text.rnn.embedding
  rnn.*                  bidirectional GRU (same parameter names)        -> text.rnn.gru.*
  ft_attn                Linear(1024->1)                                 -> text.attn_pool.proj
  role_embedding         Embedding(16, 1024), rows in the reference's role order
                         (V, ARG1, ARG0, ...) -> permuted to models.batch.ROLES -> text.role_embedding
  gcn.layers.0.{ctx_layer, layernorm, edge_attn_query, edge_attn_key}    -> text.gcn.{ctx, norm, query, key}
  classifier_verb.0 / bn_verb(=classifier_verb.1), classifier_noun.0 / bn_noun(=classifier_noun.1)
                                                                         -> text.verb_head / text.noun_head
  fc                     Linear(1024->1024), never used in forward       -> dropped

85 entries, 3,148,800 unused parameters (conv1, conv2, text fc) at MSR-VTT sizes.
The file is read with torch.load(weights_only=True). The result is a storage.checkpoints
checkpoint (format_version set) whose HANetConfig has fidelity='reference' unless told otherwise,
and which records the vocabulary fingerprints it was remapped for (``vocab``); evaluation refuses
it on shards with other vocabularies (pipeline.learn.evaluate.check_vocabularies).

CLI: python -m models.import_reference SRC.th DST.pt [--config hanet.json] [--vocab int2word.npy
     --shards ROOT [--verb-concepts verbs.json --noun-concepts nouns.json]] [--fidelity improved]
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .batch import ROLES
from .config import HANetConfig, TrainConfig
from .hanet import HANet, count_parameters
from .import_options import add_vocab_arguments, vocab_kwargs  # noqa: F401  (re-exported)
from .import_vocab import (fingerprint, read_concept_list, read_reference_words, remap_concept_rows, remap_word_rows,
                           shard_vocabularies)

# the reference's role order (t2vretrieval/readers/rolegraphs.py ROLES); note ARG1 before ARG0
REFERENCE_ROLES: tuple[str, ...] = (
    "V", "ARG1", "ARG0", "ARG2", "ARG3", "ARG4", "ARGM-LOC", "ARGM-MNR", "ARGM-TMP",
    "ARGM-DIR", "ARGM-ADV", "ARGM-PRP", "ARGM-PRD", "ARGM-COM", "ARGM-MOD", "NOUN",
)

# reference module prefix -> our module prefix (matched on whole dotted components)
VIDEO_MAP: dict[str, str] = {
    "level_embeds.0": "video.fc_event",
    "level_embeds.1": "video.fc_action",
    "level_embeds.2": "video.fc_entity",
    "ft_attn": "video.attn_pool.proj",
    "classifier_verb.0": "video.verb_head.conv",
    "bn_verb": "video.verb_head.bn",
    "classifier_noun.0": "video.noun_head.conv",
    "bn_noun": "video.noun_head.bn",
    "seblock1.fc.0": "video.se_action.fc1",
    "seblock1.fc.2": "video.se_action.fc2",
    "seblock2.fc.0": "video.se_entity.fc1",
    "seblock2.fc.2": "video.se_entity.fc2",
}
TEXT_MAP: dict[str, str] = {
    "embedding.we": "text.rnn.embedding",
    "rnn": "text.rnn.gru",
    "ft_attn": "text.attn_pool.proj",
    "role_embedding": "text.role_embedding",
    "gcn.layers.0.ctx_layer": "text.gcn.ctx",
    "gcn.layers.0.layernorm": "text.gcn.norm",
    "gcn.layers.0.edge_attn_query": "text.gcn.query",
    "gcn.layers.0.edge_attn_key": "text.gcn.key",
    "classifier_verb.0": "text.verb_head.conv",
    "bn_verb": "text.verb_head.bn",
    "classifier_noun.0": "text.noun_head.conv",
    "bn_noun": "text.noun_head.bn",
}
# second registrations of the same BatchNorm modules (inside the nn.Sequential heads)
DUPLICATES: dict[str, str] = {"classifier_verb.1": "bn_verb", "classifier_noun.1": "bn_noun"}
UNUSED: dict[str, tuple[str, ...]] = {"video_encoder": ("conv1", "conv2"), "text_encoder": ("fc",)}
ENCODERS: dict[str, dict[str, str]] = {"video_encoder": VIDEO_MAP, "text_encoder": TEXT_MAP}


@dataclass
class ImportReport:
    source: str = ""
    n_source_entries: int = 0
    n_source_numel: int = 0  # floating elements over all entries (incl. BN buffers, duplicates)
    loaded: dict[str, str] = field(default_factory=dict)  # our key -> source key
    duplicates: list[str] = field(default_factory=list)  # source keys equal to their twin
    duplicate_mismatch: list[str] = field(default_factory=list)  # twins that differ (first kept)
    dropped_unused: list[str] = field(default_factory=list)  # conv1/conv2/text fc
    dropped_unused_params: int = 0
    dropped_by_config: list[str] = field(default_factory=list)  # modules this config does not build
    unexpected: list[str] = field(default_factory=list)  # source keys we do not know
    missing: list[str] = field(default_factory=list)  # our keys no source entry filled
    shape_errors: list[str] = field(default_factory=list)
    role_rows_permuted: bool = False
    n_params_loaded: int = 0  # elements of our trainable parameters filled from the source
    our_parameter_count: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.shape_errors or self.unexpected)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def _split_source(obj: dict) -> dict[str, dict[str, Tensor]]:
    """{'video_encoder': sd, 'text_encoder': sd} from a nested or flat (prefixed) dict."""
    for wrapper in ("state_dicts", "state_dict", "model"):
        if isinstance(obj.get(wrapper), dict) and not any(k in obj for k in ENCODERS):
            obj = obj[wrapper]
    out: dict[str, dict[str, Tensor]] = {k: {} for k in ENCODERS}
    for key, val in obj.items():
        if key in ENCODERS and isinstance(val, dict):
            out[key].update(val)
            continue
        enc, _, rest = key.partition(".")
        if enc not in ENCODERS or not rest:
            raise ValueError(f"not a Roc-Ng/HANet checkpoint entry: {key!r}")
        out[enc][rest] = val
    return out


def _match(name: str, table: dict[str, str]) -> tuple[str, str] | None:
    """Longest reference prefix (whole dotted components) of `name` -> (prefix, suffix)."""
    best = None
    for prefix in table:
        if name == prefix or name.startswith(prefix + "."):
            if best is None or len(prefix) > len(best):
                best = prefix
    if best is None:
        return None
    return best, name[len(best):]


def _role_permutation() -> list[int]:
    """our row i <- reference row perm[i]."""
    if set(REFERENCE_ROLES) != set(ROLES):
        raise AssertionError("reference and our role sets differ")
    return [REFERENCE_ROLES.index(r) for r in ROLES]


def map_reference_state_dict(src: dict, model: HANet) -> tuple[dict[str, Tensor], ImportReport]:
    """Translate a reference state dict (nested or flat) into `model`'s key space.

    Returns (state dict holding every key of `model` that the source fills, report). Does not
    modify `model`.
    """
    report = ImportReport()
    parts = _split_source(src)
    ours = model.state_dict()
    param_names = {n for n, _ in model.named_parameters()}
    out: dict[str, Tensor] = {}
    for enc, sd in parts.items():
        table = ENCODERS[enc]
        for name, val in sd.items():
            full = f"{enc}.{name}"
            report.n_source_entries += 1
            if not isinstance(val, Tensor):
                report.unexpected.append(full)
                continue
            if val.is_floating_point():
                report.n_source_numel += val.numel()
            head = name.split(".")[0]
            if head in UNUSED[enc]:
                report.dropped_unused.append(full)
                report.dropped_unused_params += val.numel()
                continue
            dup = _match(name, DUPLICATES)
            if dup is not None:
                twin = DUPLICATES[dup[0]] + dup[1]
                if twin in sd:
                    same = sd[twin].shape == val.shape and torch.equal(sd[twin], val)
                    (report.duplicates if same else report.duplicate_mismatch).append(full)
                    continue
                name = twin  # only the Sequential copy is present: use it
            m = _match(name, table)
            if m is None:
                report.unexpected.append(full)
                continue
            key = table[m[0]] + m[1]
            if key not in ours:
                report.dropped_by_config.append(full)
                continue
            if key == "text.role_embedding.weight" and val.shape[0] == len(REFERENCE_ROLES):
                val = val[_role_permutation()]
                report.role_rows_permuted = True
            if tuple(val.shape) != tuple(ours[key].shape):
                report.shape_errors.append(
                    f"{full} {tuple(val.shape)} -> {key} {tuple(ours[key].shape)}")
                continue
            out[key] = val.detach().clone().to(ours[key].dtype)
            report.loaded[key] = full
            if key in param_names:
                report.n_params_loaded += val.numel()
    report.missing = sorted(k for k in ours if k not in out)
    report.our_parameter_count = count_parameters(model)
    return out, report


def _infer_config(parts: dict[str, dict[str, Tensor]], cfg: HANetConfig) -> HANetConfig:
    """The shape fields of `cfg` read from the source tensors: feat_dim, joint_dim, word_dim,
    vocab_size, concept counts, verb kernel, SE reduction, GCN query/key size. Fields the caller
    set explicitly (vocab_size 0 = unset) and entries the source lacks are left as given."""
    v, t = parts["video_encoder"], parts["text_encoder"]
    upd: dict[str, int] = {}

    explicit = cfg.model_fields_set - ({"vocab_size"} if cfg.vocab_size == 0 else set())

    def take(field_name: str, sd: dict, key: str, dim: int) -> None:
        # a field the caller set explicitly is kept (a disagreement is then a reported shape error)
        if field_name not in explicit and key in sd and sd[key].dim() > dim:
            upd[field_name] = int(sd[key].shape[dim])

    take("feat_dim", v, "level_embeds.1.weight", 1)
    take("joint_dim", v, "level_embeds.1.weight", 0)
    take("n_verb_concepts", v, "classifier_verb.0.weight", 0)
    take("verb_kernel", v, "classifier_verb.0.weight", 2)
    take("n_noun_concepts", v, "classifier_noun.0.weight", 0)
    take("vocab_size", t, "embedding.we.weight", 0)
    take("word_dim", t, "embedding.we.weight", 1)
    take("gcn_attn_dim", t, "gcn.layers.0.edge_attn_query.weight", 0)
    if "seblock1.fc.0.weight" in v and "joint_dim" in upd and "se_reduction" not in explicit:
        upd["se_reduction"] = max(1, upd["joint_dim"] // int(v["seblock1.fc.0.weight"].shape[0]))
    return cfg.model_copy(update=upd)


def _remap_vocabularies(parts: dict[str, dict[str, Tensor]], cfg: HANetConfig, shards, vocab, verb_concepts,
                        noun_concepts) -> tuple[HANetConfig, dict, dict]:
    """Remap the word embedding / concept heads of ``parts`` (in place) onto the shards' vocabularies:
    (the config with the shards' sizes, the vocabulary record, the remap reports)."""
    vocab_record: dict = {"words": None, "verb": None, "noun": None, "remapped_for": None}
    remap: dict = {}
    if (vocab or verb_concepts or noun_concepts) and shards is None:
        raise ValueError("remapping a vocabulary needs the shard tree it is for (shards=...)")
    if shards is not None:
        build = shard_vocabularies(shards)
        vocab_record["remapped_for"] = str(Path(shards))
        if vocab is not None:
            if not build["words"]:
                raise ValueError(f"{shards}: no text/words.parquet to remap the word embedding onto")
            emb = parts["text_encoder"]["embedding.we.weight"]
            parts["text_encoder"]["embedding.we.weight"], remap["words"] = remap_word_rows(
                emb, read_reference_words(vocab), build["words"])
            vocab_record["words"] = fingerprint(build["words"])
            cfg = cfg.model_copy(update={"vocab_size": len(build["words"])})
        for kind, path in (("verb", verb_concepts), ("noun", noun_concepts)):
            if path is None:
                continue
            if not build[kind]:
                raise ValueError(f"{shards}: no {kind} concepts in text/concepts.parquet")
            # a frequency file lists every lemma; the checkpoint's head holds the first n of them
            ref_lemmas = read_concept_list(path)[:getattr(cfg, f"n_{kind}_concepts")]
            remap[kind] = remap_concept_rows(parts, kind, ref_lemmas, build[kind])
            vocab_record[kind] = fingerprint(build[kind])
            cfg = cfg.model_copy(update={f"n_{kind}_concepts": len(build[kind])})
    return cfg, vocab_record, remap


def _save_imported(dst_path, src_path: Path, model: HANet, cfg: HANetConfig, report: dict, vocab_record: dict,
                   fidelity: dict) -> None:
    """The imported model as a checkpoint of this project's format (storage.checkpoints)."""
    from storage.checkpoints import save_checkpoint

    payload = {
        "model_name": "hanet",
        "config_json": TrainConfig(hanet=cfg).model_dump_json(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "epoch": -1,
        "imported_from": str(src_path),
        "import_report_json": json.dumps(report),
        "vocab": vocab_record,
        "fidelity_json": json.dumps(fidelity),
    }
    save_checkpoint(dst_path, payload)


def import_reference_checkpoint(src_path: str | Path, dst_path: str | Path | None,
                                cfg: HANetConfig | None = None, strict: bool = True, *,
                                vocab: str | Path | None = None, shards: str | Path | None = None,
                                verb_concepts: str | Path | None = None,
                                noun_concepts: str | Path | None = None,
                                fidelity: str | None = "reference") -> dict:
    """Read a Roc-Ng/HANet checkpoint, map it onto HANet(cfg) and (if dst_path) save a checkpoint
    in this project's format (storage.checkpoints: format_version, model_name 'hanet',
    config_json, model, ...), which ``vtr evaluate`` / pipeline.learn.evaluate read.

    Shapes are read from the source (cfg gives everything else; default HANetConfig()).
    fidelity: the HANetConfig.fidelity recorded ('reference' unless told otherwise; None keeps
    cfg's). vocab (the reference's int2word.npy / word2int.json) + shards (a shard tree): the
    embedding rows are remapped onto the shards' text/words.parquet (words the reference lacks
    get its UNK row; coverage reported). verb_concepts / noun_concepts (the reference's concept
    lists in id order) + shards: the concept heads are permuted onto text/concepts.parquet.
    The checkpoint records the vocabulary fingerprints it is valid for (None = not remapped
    for any build: pipeline.learn.evaluate then refuses it). strict: raise ValueError when any of our
    tensors stays unfilled, a shape disagrees or a source entry is unknown.
    """
    src_path = Path(src_path)
    cfg = cfg or HANetConfig()
    if fidelity is not None:
        cfg = cfg.model_copy(update={"fidelity": fidelity})
    from storage.checkpoints import load_torch_file

    obj = load_torch_file(src_path)
    if not isinstance(obj, dict):
        raise ValueError(f"{src_path}: expected a dict of state dicts, got {type(obj).__name__}")
    parts = _split_source(obj)
    cfg = _infer_config(parts, cfg)
    cfg, vocab_record, remap = _remap_vocabularies(parts, cfg, shards, vocab, verb_concepts, noun_concepts)
    flat = {f"{enc}.{k}": v for enc, sd in parts.items() for k, v in sd.items()}
    model = HANet(cfg)
    sd, report = map_reference_state_dict(flat, model)
    report.source = str(src_path)
    if strict and not report.ok:
        raise ValueError(f"{src_path} does not fit HANet({cfg!r}): missing={report.missing} "
                         f"shape_errors={report.shape_errors} unexpected={report.unexpected}")
    model.load_state_dict(sd, strict=False)
    result = report.to_dict()
    result["hanet_config"] = cfg.model_dump(mode="json")
    result["fidelity"] = {"fidelity": cfg.fidelity, **cfg.deviations()}
    result["vocab"] = vocab_record
    result["remap"] = remap
    if dst_path is not None:
        _save_imported(dst_path, src_path, model, cfg, {**report.to_dict(), "remap": remap}, vocab_record,
                       result["fidelity"])
        result["destination"] = str(dst_path)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="Roc-Ng/HANet checkpoint (epoch.N.th)")
    ap.add_argument("dst", help="where to write our checkpoint")
    ap.add_argument("--config", help="HANetConfig JSON (default: HANetConfig(), vocab from the source)")
    ap.add_argument("--no-strict", action="store_true", help="save even if tensors are left unfilled")
    add_vocab_arguments(ap)
    args = ap.parse_args(argv)
    cfg = HANetConfig.model_validate_json(Path(args.config).read_text()) if args.config else HANetConfig()
    report = import_reference_checkpoint(args.src, args.dst, cfg, strict=not args.no_strict,
                                         **vocab_kwargs(args))
    summary = {k: report[k] for k in ("ok", "n_source_entries", "n_source_numel", "n_params_loaded",
                                      "dropped_unused", "dropped_unused_params", "duplicates",
                                      "duplicate_mismatch", "dropped_by_config", "unexpected",
                                      "missing", "shape_errors", "role_rows_permuted",
                                      "our_parameter_count", "destination", "fidelity", "vocab", "remap")}
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
