"""HGR: Hierarchical Graph Reasoning (Chen et al., CVPR 2020), as cshizhe/hgr_v2t defines it.

Video (t2vretrieval/encoders/mlvideo.py, MultilevelEncoder): three Linear(D_feat -> D) frame
projections with dropout: event (level 0, attention-pooled into one vector), action (level 1)
and entity (level 2) frames.
Text (encoders/mlsent.py, RoleGraphEncoder): word embedding + dropout -> BiGRU (fwd/bwd
averaged); sentence = attention pool of the word states; verb / noun phrases = max-pool of the
word states over their spans x role embedding; nodes [sentence, verbs, nouns] -> gcn_num_layers
attention-GCN layers (query/key D -> D/2, residual, dropout, LayerNorm).
Matching (models/mlmatch.py): sentence level = cosine(pooled event, GCN root); verb level =
stacked attention(action frames, verb nodes); noun level = stacked attention(entity frames,
noun nodes) (cosine -> clamp 0 -> L2 over frames -> softmax(lambda=4 x) -> cosine of the
attended frame vector with the node -> mean over valid nodes); fused = mean of the three.
Loss: VSE++ hinge with the hardest negative, both directions, on the fused score (optionally
plus per-level losses, ``loss_weights``).

Shared blocks: models.blocks (video projection, role-graph text encoder), models.similarity
(stacked attention, cosine), models.losses (VSE++). Ablation switches use_global / use_verb /
use_noun drop a level from the fusion (its modules still exist, so checkpoints stay loadable).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .batch import ConceptLabels, TextBatch, VideoBatch
from .blocks import MultiLevelVideoProjection, RoleGraphTextEncoder
from .losses import hardest_negative_hinge
from .model_configs import HGRConfig
from .registry import register
from .similarity import cosine_matrix, stacked_attention

PART_KEYS = ("glo", "verb", "noun", "fused")


def _vocab(cfg, word_embeddings: Tensor | None) -> int:
    vocab = cfg.vocab_size
    if word_embeddings is not None:
        if vocab and vocab != word_embeddings.shape[0]:
            raise ValueError(f"vocab_size {vocab} != word_embeddings rows {word_embeddings.shape[0]}")
        if word_embeddings.shape[1] != cfg.word_dim:
            raise ValueError(f"word_dim {cfg.word_dim} != word_embeddings cols {word_embeddings.shape[1]}")
        vocab = word_embeddings.shape[0]
    if vocab <= 0:
        raise ValueError("vocab_size is 0 and no word_embeddings were given")
    return vocab


@register("hgr", config=HGRConfig, needs={"video", "words", "graph"}, score_parts=PART_KEYS, fused="fused",
          importer="models.hgr_import:import_hgr_state",
          description="HGR (Chen et al., CVPR 2020): global + verb + noun matching, mean fusion")
class HGR(nn.Module):
    def __init__(self, cfg: HGRConfig, word_embeddings: Tensor | None = None):
        super().__init__()
        if not (cfg.use_global or cfg.use_verb or cfg.use_noun):
            raise ValueError("at least one of use_global/use_verb/use_noun must be True")
        self.cfg = cfg
        self.vocab_size = _vocab(cfg, word_embeddings)
        D = cfg.joint_dim
        self.video = MultiLevelVideoProjection(cfg.feat_dim, D, 3, cfg.dropout_video)
        self.text = RoleGraphTextEncoder(self.vocab_size, cfg.word_dim, D, cfg.dropout_text, cfg.gcn_num_layers,
                                         cfg.gcn_attention, cfg.gcn_attn_dim, cfg.dropout_gcn, word_embeddings)
        self.enabled_parts = tuple(k for k, on in (("glo", cfg.use_global), ("verb", cfg.use_verb),
                                                   ("noun", cfg.use_noun)) if on)

    def encode_videos(self, v: VideoBatch) -> dict[str, Tensor]:
        """mask (B,N); glo (B,D) attention-pooled event; action, entity (B,N,D) frames."""
        x, mask = v.feats, v.mask.to(torch.bool)
        if self.cfg.frame_norm == "l2":
            x = torch.nn.functional.normalize(x, dim=-1)
        glo, (_, action, entity) = self.video(x, mask)
        return {"mask": mask, "glo": glo, "action": action, "entity": entity}

    def encode_texts(self, t: TextBatch) -> dict[str, Tensor]:
        """glo (B,D) GCN root; verbs (B,V,D), nouns (B,E,D) GCN nodes; verb_mask, noun_mask."""
        V, E = self.cfg.max_verbs, self.cfg.max_nouns
        if t.node_masks.shape[1] != 1 + V + E:
            raise ValueError(f"text batch has {t.node_masks.shape[1]} nodes, config expects 1+{V}+{E}")
        out = self.text(t)
        nodes, valid = out["nodes"], out["node_valid"]
        return {"glo": nodes[:, 0], "verbs": nodes[:, 1:1 + V], "nouns": nodes[:, 1 + V:],
                "verb_mask": valid[:, 1:1 + V], "noun_mask": valid[:, 1 + V:]}

    def similarity_parts(self, ve: dict[str, Tensor], te: dict[str, Tensor]) -> dict[str, Tensor]:
        cfg = self.cfg
        parts: dict[str, Tensor] = {}
        if cfg.use_global:
            parts["glo"] = cosine_matrix(ve["glo"], te["glo"])
        if cfg.use_verb:
            parts["verb"] = stacked_attention(ve["action"], ve["mask"], te["verbs"], te["verb_mask"],
                                              cfg.attn_lambda, cfg.attn_fusion)
        if cfg.use_noun:
            parts["noun"] = stacked_attention(ve["entity"], ve["mask"], te["nouns"], te["noun_mask"],
                                              cfg.attn_lambda, cfg.attn_fusion)
        parts["fused"] = torch.stack([parts[k] for k in self.enabled_parts]).mean(0)
        zeros = parts["fused"].new_zeros(parts["fused"].shape)
        return {k: parts.get(k, zeros) for k in PART_KEYS}

    def similarity(self, ve: dict[str, Tensor], te: dict[str, Tensor]) -> Tensor:
        return self.similarity_parts(ve, te)["fused"]

    def loss(self, v: VideoBatch, t: TextBatch, labels: ConceptLabels | None = None,
             positives: Tensor | None = None) -> dict[str, Tensor]:
        ve, te = self.encode_videos(v), self.encode_texts(t)
        return self.loss_from_parts(ve, te, self.similarity_parts(ve, te), labels, positives)

    def loss_from_parts(self, ve: dict[str, Tensor], te: dict[str, Tensor], parts: dict[str, Tensor],
                        labels: ConceptLabels | None = None, positives: Tensor | None = None) -> dict[str, Tensor]:
        """:meth:`loss` from the encoder outputs and score matrices (only the scores are used)."""
        cfg = self.cfg
        out = {"fused": hardest_negative_hinge(parts["fused"], cfg.margin, positives)}
        total = out["fused"]
        if cfg.loss_weights is not None:
            w = dict(zip(("fused", "glo", "verb", "noun"), cfg.loss_weights))
            total = w["fused"] * out["fused"]
            for k in self.enabled_parts:
                out[k] = hardest_negative_hinge(parts[k], cfg.margin, positives)
                total = total + w[k] * out[k]
        out["total"] = total
        return out
