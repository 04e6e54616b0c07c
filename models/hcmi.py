"""HCMI-style model: hierarchical cross-modal interaction (frame-word, clip-phrase, video-sentence).

No public code exists; this follows the paper's summary (../shared/papers/hcmi-summary.txt) on
the same ResNet/I3D frame features as HANet and HGR (the paper builds on CLIP). docs/models.md
states every formula; in short:

Video: Linear(D_feat -> D) + learned position embedding -> ``n_attn_layers`` pre-norm
transformer layers of frame self-attention (padded frames masked out as keys) -> frames f.
Adaptive clustering = soft k-means on the self-attended frames: K centres initialised as the
means of K equal temporal segments of the REAL frames, then ``cluster_iters`` rounds of
  A_nk = softmax_k(cos(f_n, c_k) / T_c)  (real frames only),  c_k = sum_n A_nk f_n / sum_n A_nk.
Correlated frames (after self-attention) pull the same centre, wherever they lie in time, and
the whole step is differentiable and padding-free. The K centres are the clip level; an
attention pool over them is the one video-level vector.
Text: the shared role-graph encoder (models.blocks): BiGRU word states (word level), GCN verb /
noun nodes (phrase level), GCN root (sentence level).
Scores: frame-word and clip-phrase = token-wise max-mean late interaction (models.blocks
.max_mean_similarity), video-sentence = cosine; fused = weighted mean of the enabled levels.
Loss: per level a symmetric InfoNCE with its own learnable temperature, weighted sum;
adaptive label denoising and marginal sample enhancement are config switches.
"""
from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import Tensor, nn

from .batch import ConceptLabels, TextBatch, VideoBatch
from .blocks import RoleGraphTextEncoder, max_mean_similarity, symmetric_info_nce
from .hgr import _vocab
from .layers import AttentionPool, zero_pad
from .model_configs import ModelConfig
from .registry import register
from .similarity import cosine_matrix

LEVELS = ("frame_word", "clip_phrase", "video_sentence")
PART_KEYS = LEVELS + ("fused",)


class HCMIConfig(ModelConfig):
    """HCMI-style hierarchical cross-modal interaction on ResNet/I3D frame features (docs/models.md)."""
    joint_dim: int = 512
    # video: frame self-attention
    n_attn_layers: int = Field(1, ge=0, description="transformer layers of frame self-attention")
    n_heads: int = 4
    ff_mult: int = Field(2, description="feed-forward width = ff_mult * joint_dim")
    dropout_video: float = 0.1
    # video: adaptive clustering (soft k-means on the self-attended frames)
    n_clips: int = Field(4, ge=1, description="clusters (clip-level representations) per video")
    cluster_iters: int = Field(3, ge=1, description="soft k-means refinement steps")
    cluster_temperature: float = Field(0.1, description="softmax temperature of the frame->cluster "
                                                        "assignment over cosine similarities")
    # text: BiGRU words, role-graph phrases, sentence root
    dropout_text: float = 0.2
    gcn_num_layers: int = Field(1, ge=0)
    gcn_attn_dim: int = Field(0, description="0 = joint_dim // 2")
    dropout_gcn: float = 0.1
    # levels and fusion
    use_frame_word: bool = True
    use_clip_phrase: bool = True
    use_video_sentence: bool = True
    level_weights: tuple[float, float, float] = Field(
        (1.0, 1.0, 1.0), description="(frame-word, clip-phrase, video-sentence) weights of the losses "
                                     "and of the fused inference score")
    # contrastive loss
    init_temperature: float = Field(0.05, description="initial InfoNCE temperature (learnable, one per level)")
    learn_temperature: bool = True
    max_logit_scale: float = Field(100.0, description="1/temperature is clamped to this")
    label_denoising: bool = Field(False, description="adaptive label denoising (docs/models.md)")
    denoise_alpha: float = Field(0.3, ge=0.0, le=1.0, description="largest share of the model's own "
                                                                  "belief in a denoised target")
    marginal_enhancement: bool = Field(False, description="marginal sample enhancement (docs/models.md)")
    marginal_delta: float = Field(0.1, description="a negative within this cosine of the positive is marginal")
    marginal_lambda: float = Field(1.0, ge=0.0, description="extra weight of a marginal negative")


def segment_weights(mask: Tensor, k: int) -> Tensor:
    """(B, N) bool -> (B, K, N) averaging weights of K equal temporal segments of the real frames
    (segment j covers real positions [floor(j n / K), floor((j+1) n / K)), at least one frame)."""
    n = mask.sum(1).to(torch.float32)  # (B,)
    t = torch.arange(mask.shape[1], device=mask.device, dtype=torch.float32)
    j = torch.arange(k, device=mask.device, dtype=torch.float32)
    lo = torch.floor(j[None] * n[:, None] / k)                                  # (B, K)
    hi = torch.maximum(torch.floor((j[None] + 1) * n[:, None] / k), lo + 1)
    hi = torch.minimum(hi, n[:, None].clamp(min=1))
    lo = torch.minimum(lo, hi - 1)
    w = ((t[None, None] >= lo[..., None]) & (t[None, None] < hi[..., None]) & mask[:, None]).float()
    return w / w.sum(-1, keepdim=True).clamp(min=1)


class FrameSelfAttention(nn.Module):
    def __init__(self, cfg: HCMIConfig):
        super().__init__()
        D = cfg.joint_dim
        self.proj = nn.Linear(cfg.feat_dim, D)
        self.pos = nn.Embedding(cfg.max_frames, D)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(D, cfg.n_heads, cfg.ff_mult * D, cfg.dropout_video, batch_first=True,
                                       norm_first=True)
            for _ in range(cfg.n_attn_layers))
        self.dropout = nn.Dropout(cfg.dropout_video)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        N = x.shape[1]
        if N > self.pos.num_embeddings:
            raise ValueError(f"{N} frames > max_frames {self.pos.num_embeddings}")
        h = self.dropout(self.proj(x)) + self.pos.weight[:N].unsqueeze(0)
        h = zero_pad(h, mask)
        for layer in self.layers:
            # the math path (not the fused inference kernel): identical numerics in train and eval
            h = zero_pad(layer(h, src_key_padding_mask=~mask), mask)
        return h


@register("hcmi", config=HCMIConfig, needs={"video", "words", "graph"}, score_parts=PART_KEYS, fused="fused",
          description="HCMI-style: frame-word, clip-phrase, video-sentence contrastive matching")
class HCMI(nn.Module):
    def __init__(self, cfg: HCMIConfig, word_embeddings: Tensor | None = None):
        super().__init__()
        if not (cfg.use_frame_word or cfg.use_clip_phrase or cfg.use_video_sentence):
            raise ValueError("at least one level must be enabled")
        self.cfg = cfg
        self.vocab_size = _vocab(cfg, word_embeddings)
        D = cfg.joint_dim
        self.frames = FrameSelfAttention(cfg)
        self.video_pool = AttentionPool(D)
        self.text = RoleGraphTextEncoder(self.vocab_size, cfg.word_dim, D, cfg.dropout_text, cfg.gcn_num_layers,
                                         True, cfg.gcn_attn_dim, cfg.dropout_gcn, word_embeddings)
        init = math.log(1.0 / cfg.init_temperature)
        self.log_scale = nn.Parameter(torch.full((3,), init), requires_grad=cfg.learn_temperature)
        self.enabled = tuple(k for k, on in zip(LEVELS, (cfg.use_frame_word, cfg.use_clip_phrase,
                                                         cfg.use_video_sentence)) if on)
        self.weights = dict(zip(LEVELS, cfg.level_weights))

    # ------------------------------------------------------------------ encoders
    def cluster(self, f: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Soft k-means of the frames: (centres (B,K,D), assignment (B,N,K), 0 at padded frames)."""
        cfg = self.cfg
        c = torch.bmm(segment_weights(mask, cfg.n_clips).to(f.dtype), f)
        fn = nn.functional.normalize(f, dim=-1)
        m = mask.unsqueeze(-1).to(f.dtype)
        a = None
        for _ in range(cfg.cluster_iters):
            logits = torch.einsum("bnd,bkd->bnk", fn, nn.functional.normalize(c, dim=-1)) / cfg.cluster_temperature
            a = torch.softmax(logits, dim=-1) * m
            c = torch.einsum("bnk,bnd->bkd", a, f) / a.sum(1).unsqueeze(-1).clamp(min=1e-6)
        return c, a

    def encode_videos(self, v: VideoBatch) -> dict[str, Tensor]:
        """mask (B,N); frames (B,N,D); clips (B,K,D) + clip_mask; video (B,D); assign (B,N,K)."""
        x, mask = v.feats, v.mask.to(torch.bool)
        if self.cfg.frame_norm == "l2":
            x = nn.functional.normalize(x, dim=-1)
        f = self.frames(x, mask)
        clips, assign = self.cluster(f, mask)
        clip_mask = torch.ones(clips.shape[:2], dtype=torch.bool, device=clips.device)
        return {"mask": mask, "frames": f, "clips": clips, "clip_mask": clip_mask,
                "video": self.video_pool(clips, clip_mask), "assign": assign}

    def encode_texts(self, t: TextBatch) -> dict[str, Tensor]:
        """words (B,L,D) + word_mask; phrases (B,V+E,D) GCN nodes + phrase_mask; sentence (B,D)."""
        V, E = self.cfg.max_verbs, self.cfg.max_nouns
        if t.node_masks.shape[1] != 1 + V + E:
            raise ValueError(f"text batch has {t.node_masks.shape[1]} nodes, config expects 1+{V}+{E}")
        out = self.text(t)
        return {"words": out["words"], "word_mask": out["word_mask"], "phrases": out["nodes"][:, 1:],
                "phrase_mask": out["node_valid"][:, 1:], "sentence": out["nodes"][:, 0]}

    # ------------------------------------------------------------------ scores
    def similarity_parts(self, ve: dict[str, Tensor], te: dict[str, Tensor]) -> dict[str, Tensor]:
        parts: dict[str, Tensor] = {}
        if "frame_word" in self.enabled:
            parts["frame_word"] = max_mean_similarity(ve["frames"], ve["mask"], te["words"], te["word_mask"])
        if "clip_phrase" in self.enabled:
            parts["clip_phrase"] = max_mean_similarity(ve["clips"], ve["clip_mask"], te["phrases"],
                                                       te["phrase_mask"])
        if "video_sentence" in self.enabled:
            parts["video_sentence"] = cosine_matrix(ve["video"], te["sentence"])
        wsum = sum(self.weights[k] for k in self.enabled)
        parts["fused"] = sum(self.weights[k] * parts[k] for k in self.enabled) / wsum
        zeros = parts["fused"].new_zeros(parts["fused"].shape)
        return {k: parts.get(k, zeros) for k in PART_KEYS}

    def similarity(self, ve: dict[str, Tensor], te: dict[str, Tensor]) -> Tensor:
        return self.similarity_parts(ve, te)["fused"]

    def logit_scales(self) -> Tensor:
        return self.log_scale.clamp(max=math.log(self.cfg.max_logit_scale)).exp()

    def loss(self, v: VideoBatch, t: TextBatch, labels: ConceptLabels | None = None,
             positives: Tensor | None = None) -> dict[str, Tensor]:
        ve, te = self.encode_videos(v), self.encode_texts(t)
        return self.loss_from_parts(ve, te, self.similarity_parts(ve, te), labels, positives)

    def loss_from_parts(self, ve: dict[str, Tensor], te: dict[str, Tensor], parts: dict[str, Tensor],
                        labels: ConceptLabels | None = None, positives: Tensor | None = None) -> dict[str, Tensor]:
        """:meth:`loss` from the encoder outputs and score matrices (only the scores are used)."""
        cfg = self.cfg
        scales = self.logit_scales()
        out: dict[str, Tensor] = {}
        total = parts["fused"].new_zeros(())
        wsum = sum(self.weights[k] for k in self.enabled)
        for i, k in enumerate(LEVELS):
            if k not in self.enabled:
                continue
            out[k] = symmetric_info_nce(
                parts[k], scales[i], positives,
                denoise_alpha=cfg.denoise_alpha if cfg.label_denoising else 0.0,
                marginal_delta=cfg.marginal_delta,
                marginal_lambda=cfg.marginal_lambda if cfg.marginal_enhancement else 0.0)
            total = total + self.weights[k] * out[k] / wsum
        out["total"] = total
        return out
