"""A small stand-in with HANet's API, so the engine is tested against the contract only.

Mean-pooled linear video/text embeddings, cosine similarity, VSE++ hinge loss (hardest
negative) + mu * BCE of video concept heads (with the ignore masks). It has dropout
(so resume tests see RNG use) and counts what it encodes (encode-once tests).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.batch import ConceptLabels, TextBatch, VideoBatch
from models.config import HANetConfig


class ToyModel(nn.Module):
    def __init__(self, cfg: HANetConfig, word_embeddings: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        if word_embeddings is not None:
            self.embed = nn.Embedding.from_pretrained(word_embeddings.clone(), freeze=False)
        else:
            self.embed = nn.Embedding(cfg.vocab_size, cfg.word_dim)
        self.video_fc = nn.Linear(cfg.feat_dim, cfg.joint_dim)
        self.text_fc = nn.Linear(self.embed.embedding_dim, cfg.joint_dim)
        self.verb_head = nn.Linear(cfg.feat_dim, cfg.n_verb_concepts)
        self.noun_head = nn.Linear(cfg.feat_dim, cfg.n_noun_concepts)
        self.drop = nn.Dropout(0.1)
        self.counts = {"encode_videos": 0, "encode_texts": 0, "videos": 0, "texts": 0, "similarity_pairs": 0}

    def encode_videos(self, v: VideoBatch) -> dict[str, torch.Tensor]:
        self.counts["encode_videos"] += 1
        self.counts["videos"] += len(v)
        m = v.mask.float().unsqueeze(-1)
        x = self.drop(v.feats)
        emb = (self.video_fc(x) * m).sum(1) / m.sum(1).clamp(min=1)
        fv = torch.sigmoid(self.verb_head(x))
        fn = torch.sigmoid(self.noun_head(x))
        return {
            "emb": F.normalize(emb, dim=-1),
            "frame_verb_probs": fv * m, "frame_noun_probs": fn * m,
            "verb_probs": (fv * m).sum(1) / m.sum(1).clamp(min=1),
            "noun_probs": (fn * m).sum(1) / m.sum(1).clamp(min=1),
        }

    def encode_texts(self, t: TextBatch) -> dict[str, torch.Tensor]:
        self.counts["encode_texts"] += 1
        self.counts["texts"] += len(t)
        L = t.word_ids.shape[1]
        m = (torch.arange(L)[None, :] < t.lengths[:, None]).float().unsqueeze(-1)
        e = self.drop(self.embed(t.word_ids))
        emb = (self.text_fc(e) * m).sum(1) / m.sum(1)
        return {"emb": F.normalize(emb, dim=-1)}

    def similarity_parts(self, ve, te) -> dict[str, torch.Tensor]:
        return {"global": ve["emb"] @ te["emb"].T}

    def similarity(self, ve, te) -> torch.Tensor:
        self.counts["similarity_pairs"] += ve["emb"].shape[0] * te["emb"].shape[0]
        return self.similarity_parts(ve, te)["global"]

    def loss(self, v: VideoBatch, t: TextBatch, labels: ConceptLabels) -> dict[str, torch.Tensor]:
        ve, te = self.encode_videos(v), self.encode_texts(t)
        s = self.similarity(ve, te)  # (B, B), diagonal = positives
        pos = s.diag()
        eye = torch.eye(s.shape[0], dtype=torch.bool)
        neg = s.masked_fill(eye, -1e4)
        l_t = F.relu(self.cfg.margin + neg.max(0).values - pos)   # hardest video per caption
        l_v = F.relu(self.cfg.margin + neg.max(1).values - pos)   # hardest caption per video
        rank = (l_t + l_v).mean()
        keep_v = (~labels.verb_ignore).float()
        keep_n = (~labels.noun_ignore).float()
        bce_v = (F.binary_cross_entropy(ve["verb_probs"].clamp(1e-6, 1 - 1e-6), labels.verbs, reduction="none")
                 * keep_v).sum() / keep_v.sum().clamp(min=1)
        bce_n = (F.binary_cross_entropy(ve["noun_probs"].clamp(1e-6, 1 - 1e-6), labels.nouns, reduction="none")
                 * keep_n).sum() / keep_n.sum().clamp(min=1)
        total = rank + 1.0 * (bce_v + bce_n)
        return {"total": total, "rank": rank, "bce_video": bce_v + bce_n}


def toy_factory(cfg: HANetConfig, word_embeddings: torch.Tensor | None = None) -> ToyModel:
    return ToyModel(cfg, word_embeddings)
