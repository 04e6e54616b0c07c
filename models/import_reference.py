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
Pure functions over the loaded dict (HANet's registered importer, :func:`import_hanet_state`): reading
the file, the vocabulary lists and writing this project's checkpoint are pipeline.learn.checkpoint_import's
(``vtr import-checkpoint --model hanet SRC.th DST.pt ...``). The config has fidelity='reference' unless told
otherwise, and the result records the vocabulary fingerprints the weights were remapped for (``vocab``);
evaluation refuses the checkpoint on shards with other vocabularies (pipeline.learn.evaluate.check_vocabularies).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from .batch import ROLES
from .config import HANetConfig
from .hanet import HANet
from .layers import count_parameters
from .import_vocab import fingerprint, remap_concept_rows, remap_word_rows

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


def split_source(obj: dict) -> dict[str, dict[str, Tensor]]:
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


def role_permutation() -> list[int]:
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
    parts = split_source(src)
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
                val = val[role_permutation()]
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


def _remap_vocabularies(parts: dict[str, dict[str, Tensor]], cfg: HANetConfig, build_vocab, reference_words,
                        reference_concepts) -> tuple[HANetConfig, dict, dict]:
    """Remap the word embedding / concept heads of ``parts`` (in place) onto the build's vocabularies:
    (the config with the build's sizes, the vocabulary record, the remap reports)."""
    vocab_record: dict = {"words": None, "verb": None, "noun": None}
    remap: dict = {}
    reference_concepts = {k: v for k, v in (reference_concepts or {}).items() if v is not None}
    if (reference_words is not None or reference_concepts) and build_vocab is None:
        raise ValueError("remapping a vocabulary needs the build's vocabularies it is for (build_vocab=...)")
    if build_vocab is None:
        return cfg, vocab_record, remap
    if reference_words is not None:
        if not build_vocab.get("words"):
            raise ValueError("the build has no word vocabulary (text/words.parquet) to remap the word embedding onto")
        emb = parts["text_encoder"]["embedding.we.weight"]
        parts["text_encoder"]["embedding.we.weight"], remap["words"] = remap_word_rows(
            emb, reference_words, build_vocab["words"])
        vocab_record["words"] = fingerprint(build_vocab["words"])
        cfg = cfg.model_copy(update={"vocab_size": len(build_vocab["words"])})
    for kind, lemmas in reference_concepts.items():
        if not build_vocab.get(kind):
            raise ValueError(f"the build has no {kind} concepts (text/concepts.parquet)")
        # a frequency file lists every lemma; the checkpoint's head holds the first n of them
        ref_lemmas = list(lemmas)[:getattr(cfg, f"n_{kind}_concepts")]
        remap[kind] = remap_concept_rows(parts, kind, ref_lemmas, build_vocab[kind])
        vocab_record[kind] = fingerprint(build_vocab[kind])
        cfg = cfg.model_copy(update={f"n_{kind}_concepts": len(build_vocab[kind])})
    return cfg, vocab_record, remap


def import_hanet_state(source: dict, cfg: HANetConfig | None = None, *, strict: bool = True,
                       build_vocab: dict[str, list[str]] | None = None, reference_words: list[str] | None = None,
                       reference_concepts: dict[str, list[str] | None] | None = None,
                       fidelity: str | None = "reference") -> dict:
    """Map a Roc-Ng/HANet checkpoint (``source``: its loaded dict of state dicts, nested or flat) onto
    HANet(cfg): ``{"model", "config", "result", "checkpoint"}``: the filled model, its config, the JSON
    report (``ok``, loaded/missing/unexpected..., ``hanet_config``, ``fidelity``, ``vocab``, ``remap``)
    and the entries a saved checkpoint records beside the weights.

    Shapes are read from the source (cfg gives everything else; default HANetConfig()).
    fidelity: the HANetConfig.fidelity recorded ('reference' unless told otherwise; None keeps
    cfg's). reference_words (the reference's words in id order) + build_vocab ({'words'|'verb'|'noun':
    the build's lists in id order}): the embedding rows are remapped onto the build's words (words the
    reference lacks get its UNK row; coverage reported). reference_concepts ({'verb'|'noun': the
    reference's concept lists in id order}) + build_vocab: the concept heads are permuted onto the
    build's. ``vocab`` in the result: the fingerprints of the vocabularies the weights are valid for
    (None = not remapped for any build: pipeline.learn.evaluate then refuses it). strict: raise
    ValueError when any of our tensors stays unfilled, a shape disagrees or a source entry is unknown.
    """
    if not isinstance(source, dict):
        raise ValueError(f"expected a dict of state dicts, got {type(source).__name__}")
    cfg = cfg or HANetConfig()
    if fidelity is not None:
        cfg = cfg.model_copy(update={"fidelity": fidelity})
    parts = split_source(source)
    cfg = _infer_config(parts, cfg)
    cfg, vocab_record, remap = _remap_vocabularies(parts, cfg, build_vocab, reference_words, reference_concepts)
    flat = {f"{enc}.{k}": v for enc, sd in parts.items() for k, v in sd.items()}
    model = HANet(cfg)
    sd, report = map_reference_state_dict(flat, model)
    if strict and not report.ok:
        raise ValueError(f"the checkpoint does not fit HANet({cfg!r}): missing={report.missing} "
                         f"shape_errors={report.shape_errors} unexpected={report.unexpected}")
    model.load_state_dict(sd, strict=False)
    result = report.to_dict()
    result["hanet_config"] = cfg.model_dump(mode="json")
    result["fidelity"] = {"fidelity": cfg.fidelity, **cfg.deviations()}
    result["vocab"] = vocab_record
    result["remap"] = remap
    checkpoint = {"import_report_json": json.dumps({**report.to_dict(), "remap": remap}),
                  "fidelity_json": json.dumps(result["fidelity"])}
    return {"model": model, "config": cfg, "result": result, "checkpoint": checkpoint}
