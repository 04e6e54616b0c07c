"""HANet: Hierarchical Alignment Networks for video-text retrieval (Wu et al., ACM MM 2021).

Video side (sec. 3.1.1, 3.2): three Linear(D_feat -> D) branches (+dropout) for action, entity and
event; concept heads sigma(BN(Conv1d)) on the action (k=5) and entity (k=1) frames; MIL pooling
(top-tau mean, tau = ceil(n/8) >= 1) gives video-level concept scores; SeMe: SE blocks on the
action/entity frames, then for the N_a best verbs the mean of the SE frames within +-2 of the
verb's argmax frame and for the N_e best nouns the mean of the noun's top-3 frames; the event
branch is attention-pooled into one vector.

Text side (sec. 3.1.2, 3.3): word embedding + dropout -> BiGRU (fwd/bwd averaged); concept heads
(k=1) on the word states + MIL; phrases = max-pool of word states over the span (individual
level); graph nodes = [attention-pooled sentence, phrase x role embedding] -> one attention GCN
layer -> root (global) and verb/noun nodes (local).

Alignment (sec. 3.4): individual = stacked attention(frames, pre-GCN phrases); local = stacked
attention(SeMe clips, GCN nodes); global = cosine(pooled video, GCN root); concept = Jaccard of
the MIL scores. c_l = mean of the enabled alignment scores, c_p = mean of the 2 Jaccard scores,
inference score (c_l + c_p) / 2.

Padding (cfg.padding 'masked', the 'improved' default): padded frames/words are zeroed before
convolutions and excluded from the BN statistics, SE squeeze, attention, MIL and clip selection;
empty verb/noun slots are masked; in eval mode an item's embedding does not depend on its
batch-mates. cfg.padding 'reference' reproduces Roc-Ng/HANet: a batch is cut to its longest
item and padded frames (the Linear's bias) enter the k=5 verb conv, the SE squeeze and BN.
cfg.verb_clips / noun_clips / graph_edges select the reference's or our rules for the SeMe clips
and the role-graph edges; cfg.fidelity sets all four at once (README "Reference fidelity").

Ablations: use_individual/use_local/use_global drop levels from c_l (Table 3) and their modules
are not built. use_seme=False (Table 4, "FC -> SeMe"): the SE blocks and the MIL-driven clip
selection are replaced by one Linear(D -> D) per stream applied to every frame; the local level
then aligns all real frames (masked) with the GCN nodes; concept heads/MIL stay (they feed the
Jaccard scores and the BCE). use_gcn=False (Table 4, "FC -> relational GCN"): the GCN layer is
replaced by one Linear(D -> D) applied to each node (no message passing).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .batch import ROLES, ConceptLabels, TextBatch, VideoBatch
from .config import HANetConfig
from .layers import (AttentionPool, AttnGCNLayer, BiGRUEncoder, ConceptHead, SEBlock,
                     action_clip_weights, action_clip_weights_reference, entity_clip_weights,
                     entity_clip_weights_reference, masked_max_pool, mil_pool, zero_pad)
from .losses import concept_bce, hardest_negative_hinge
from .registry import register
from .similarity import cosine_matrix, jaccard_matrix, stacked_attention

PART_KEYS = ("ind_a", "ind_e", "loc_a", "loc_e", "glo", "jac_a", "jac_e", "c_l", "c_p")


class VideoEncoder(nn.Module):
    def __init__(self, cfg: HANetConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.joint_dim
        self.dropout = nn.Dropout(cfg.dropout_video)
        self.fc_action = nn.Linear(cfg.feat_dim, D)
        self.fc_entity = nn.Linear(cfg.feat_dim, D)
        self.verb_head = ConceptHead(D, cfg.n_verb_concepts, cfg.verb_kernel)
        self.noun_head = ConceptHead(D, cfg.n_noun_concepts, 1)
        if cfg.use_global:
            self.fc_event = nn.Linear(cfg.feat_dim, D)
            self.attn_pool = AttentionPool(D)
        if cfg.use_local:
            if cfg.use_seme:
                self.se_action = SEBlock(D, cfg.se_reduction)
                self.se_entity = SEBlock(D, cfg.se_reduction)
            else:
                self.local_fc_action = nn.Linear(D, D)
                self.local_fc_entity = nn.Linear(D, D)

    def forward(self, v: VideoBatch) -> dict[str, Tensor]:
        dev = self.cfg.deviations()
        if dev["padding"] != "reference":
            return self._forward(v.feats, v.mask.to(torch.bool), dev)
        # reference padding: the batch is cut to its longest video (the reference's collate does
        # that), padded frames leak into conv/SE/BN; per-frame outputs are padded back to N
        x, mask = v.feats, v.mask.to(torch.bool)
        N, T = x.shape[1], max(1, int(mask.sum(1).max()))
        out = self._forward(x[:, :T], mask[:, :T], dev)
        if T < N:
            for k in ("mask", "ind_a", "ind_e", "frame_verb_probs", "frame_noun_probs") + (
                    ("loc_a", "loc_e", "loc_a_mask", "loc_e_mask") if not self.cfg.use_seme else ()):
                if k in out:
                    t = out[k]
                    out[k] = torch.cat([t, t.new_zeros((t.shape[0], N - T) + tuple(t.shape[2:]))], 1)
        return out

    def _forward(self, x: Tensor, mask: Tensor, dev: dict[str, str]) -> dict[str, Tensor]:
        cfg = self.cfg
        leak = dev["padding"] == "reference"
        out: dict[str, Tensor] = {"mask": mask}
        act_raw = self.dropout(self.fc_action(x))
        ent_raw = self.dropout(self.fc_entity(x))
        act = zero_pad(act_raw, mask)  # v_a^Ind (eq. 5)
        ent = zero_pad(ent_raw, mask)  # v_e^Ind
        out["ind_a"], out["ind_e"] = act, ent
        fv = self.verb_head(act_raw if leak else act, mask, leak)  # l_a^v (B, N, K_a), eq. 1
        fn = self.noun_head(ent_raw if leak else ent, mask, leak)  # l_e^v (B, N, K_e), eq. 2
        out["frame_verb_probs"], out["frame_noun_probs"] = fv, fn
        pv = mil_pool(fv, mask, cfg.mil_divisor)  # p_a^v (eq. 8)
        pn = mil_pool(fn, mask, cfg.mil_divisor)
        out["verb_probs"], out["noun_probs"] = pv, pn
        # the N_a / N_e most confident concepts (reported for heatmaps; drive the SeMe clips)
        verb_ids = pv.topk(min(cfg.n_action_clips, pv.shape[-1]), dim=-1).indices  # (B, N_a)
        noun_ids = pn.topk(min(cfg.n_entity_clips, pn.shape[-1]), dim=-1).indices  # (B, N_e)
        out["verb_ids"], out["noun_ids"] = verb_ids, noun_ids
        if cfg.use_global:
            event = zero_pad(self.dropout(self.fc_event(x)), mask)
            out["glo"] = self.attn_pool(event, mask)  # v_g^Glo (eqs. 9-10)
        if cfg.use_local:
            if cfg.use_seme:
                se_a = self.se_action(act_raw if leak else act, mask, leak)  # eq. 6
                se_e = self.se_entity(ent_raw if leak else ent, mask, leak)  # eq. 7
                sel_v = fv.gather(2, verb_ids.unsqueeze(1).expand(-1, fv.shape[1], -1))
                sel_n = fn.gather(2, noun_ids.unsqueeze(1).expand(-1, fn.shape[1], -1))
                a_fn = action_clip_weights_reference if dev["verb_clips"] == "reference" else action_clip_weights
                e_fn = entity_clip_weights_reference if dev["noun_clips"] == "reference" else entity_clip_weights
                w_a = a_fn(sel_v, mask, cfg.action_window)  # (B, N_a, N)
                w_e = e_fn(sel_n, mask, cfg.entity_topk_frames)  # (B, N_e, N)
                out["loc_a"] = torch.bmm(w_a, se_a)  # v_a^Loc
                out["loc_e"] = torch.bmm(w_e, se_e)  # v_e^Loc
                B = x.shape[0]
                out["loc_a_mask"] = torch.ones(B, w_a.shape[1], dtype=torch.bool, device=x.device)
                out["loc_e_mask"] = torch.ones(B, w_e.shape[1], dtype=torch.bool, device=x.device)
            else:
                out["loc_a"] = zero_pad(self.local_fc_action(act), mask)
                out["loc_e"] = zero_pad(self.local_fc_entity(ent), mask)
                out["loc_a_mask"], out["loc_e_mask"] = mask, mask
        return out


class TextEncoder(nn.Module):
    def __init__(self, cfg: HANetConfig, vocab_size: int, word_embeddings: Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        D = cfg.joint_dim
        self.rnn = BiGRUEncoder(vocab_size, cfg.word_dim, D, cfg.dropout_text, word_embeddings)
        self.verb_head = ConceptHead(D, cfg.n_verb_concepts, 1)
        self.noun_head = ConceptHead(D, cfg.n_noun_concepts, 1)
        self.needs_graph = cfg.use_local or cfg.use_global
        if self.needs_graph:
            self.attn_pool = AttentionPool(D)
            # one row per role of batch.ROLES; the root node carries no role embedding
            self.role_embedding = nn.Embedding(len(ROLES), D)
            if cfg.use_gcn:
                self.gcn = AttnGCNLayer(D, cfg.gcn_attn_dim, cfg.dropout_gcn)
            else:
                self.node_fc = nn.Linear(D, D)

    def forward(self, t: TextBatch) -> dict[str, Tensor]:
        cfg = self.cfg
        V, E = cfg.max_verbs, cfg.max_nouns
        n_nodes = t.node_masks.shape[1]
        if n_nodes != 1 + V + E:
            raise ValueError(f"text batch has {n_nodes} nodes, config expects 1+{V}+{E}")
        leak = cfg.deviation("padding") == "reference"
        if leak:  # the reference pads a batch to its longest caption; padded words enter text BN
            Lmax = int(t.lengths.max())
            if Lmax < t.word_ids.shape[1]:
                t = TextBatch(word_ids=t.word_ids[:, :Lmax], lengths=t.lengths,
                              node_masks=t.node_masks[..., :Lmax], node_roles=t.node_roles,
                              node_valid=t.node_valid, adjacency=t.adjacency)
        L = t.word_ids.shape[1]
        wmask = torch.arange(L, device=t.word_ids.device).unsqueeze(0) < t.lengths.unsqueeze(1)
        # s^Ind (B, L, D), eqs. 11-13; padded = 0. Under bf16 autocast kept bf16: every consumer
        # below autocasts it to bf16 or promotes it exactly, so results equal fp32 states'
        words = self.rnn(t.word_ids, t.lengths, keep_bf16=True)
        out: dict[str, Tensor] = {}
        fv = self.verb_head(words, wmask, leak)  # l_a^s, eq. 3
        fn = self.noun_head(words, wmask, leak)  # l_e^s, eq. 4
        out["verb_probs"] = mil_pool(fv, wmask, cfg.mil_divisor)  # p_a^s
        out["noun_probs"] = mil_pool(fn, wmask, cfg.mil_divisor)
        valid = t.node_valid.to(torch.bool)
        spans = (t.node_masks[:, 1:] > 0) & wmask.unsqueeze(1) & valid[:, 1:].unsqueeze(-1)
        phrases = masked_max_pool(words, spans)  # (B, V+E, D); empty slots = 0
        out["ind_a"], out["ind_e"] = phrases[:, :V], phrases[:, V:]
        out["verb_mask"], out["noun_mask"] = valid[:, 1:1 + V], valid[:, 1 + V:]
        if self.needs_graph:
            sent = self.attn_pool(words, wmask)  # s_g^Ind
            roles = torch.where(valid[:, 1:], t.node_roles[:, 1:], torch.zeros_like(t.node_roles[:, 1:]))
            nodes = torch.cat([sent.unsqueeze(1), phrases * self.role_embedding(roles)], 1)
            if cfg.use_gcn:
                nodes = self.gcn(nodes, t.adjacency, valid)  # eq. 14
            else:
                nodes = self.node_fc(nodes)
            nodes = nodes * valid.unsqueeze(-1).to(nodes.dtype)
            out["glo"] = nodes[:, 0]  # s_g^Glo
            out["loc_a"], out["loc_e"] = nodes[:, 1:1 + V], nodes[:, 1 + V:]  # s_a^Loc, s_e^Loc
        return out


@register("hanet", config=HANetConfig, needs={"video", "words", "graph", "labels"},
          score_parts=PART_KEYS + ("fused",), fused="fused", importer="models.import_reference:import_hanet_state",
          description="HANet (Wu et al., ACM MM 2021): individual/local/global alignment + concept Jaccard; "
                      "fused = (c_l + c_p) / 2")
class HANet(nn.Module):
    def __init__(self, cfg: HANetConfig, word_embeddings: Tensor | None = None):
        super().__init__()
        if not (cfg.use_individual or cfg.use_local or cfg.use_global):
            raise ValueError("at least one of use_individual/use_local/use_global must be True")
        vocab = cfg.vocab_size
        if word_embeddings is not None:
            if vocab and vocab != word_embeddings.shape[0]:
                raise ValueError(
                    f"vocab_size {vocab} != word_embeddings rows {word_embeddings.shape[0]}")
            if word_embeddings.shape[1] != cfg.word_dim:
                raise ValueError(
                    f"word_dim {cfg.word_dim} != word_embeddings cols {word_embeddings.shape[1]}")
            vocab = word_embeddings.shape[0]
        if vocab <= 0:
            raise ValueError("vocab_size is 0 and no word_embeddings were given")
        self.cfg = cfg
        self.vocab_size = vocab
        self.video = VideoEncoder(cfg)
        self.text = TextEncoder(cfg, vocab, word_embeddings)
        self.enabled_parts = tuple(
            k for k, on in (("ind_a", cfg.use_individual), ("ind_e", cfg.use_individual),
                            ("loc_a", cfg.use_local), ("loc_e", cfg.use_local),
                            ("glo", cfg.use_global)) if on)

    # ------------------------------------------------------------------ encoders
    def encode_videos(self, v: VideoBatch) -> dict[str, Tensor]:
        """Per-video tensors, leading dim B_v:
        mask (B,N) bool; ind_a, ind_e (B,N,D) frame features; loc_a (B,N_a,D), loc_e (B,N_e,D)
        SeMe clips with loc_a_mask/loc_e_mask [use_local]; glo (B,D) [use_global];
        verb_probs (B,K_a), noun_probs (B,K_e) MIL scores; frame_verb_probs (B,N,K_a),
        frame_noun_probs (B,N,K_e) frame confidences (0 at padded frames);
        verb_ids (B,N_a), noun_ids (B,N_e) the selected concepts."""
        if self.cfg.frame_norm == "l2":  # padded (all-zero) frames stay zero
            v = VideoBatch(feats=torch.nn.functional.normalize(v.feats, dim=-1), mask=v.mask)
        return self.video(v)

    def encode_texts(self, t: TextBatch) -> dict[str, Tensor]:
        """Per-caption tensors, leading dim B_t:
        ind_a (B,V,D), ind_e (B,E,D) pre-GCN phrases; verb_mask (B,V), noun_mask (B,E) bool;
        loc_a (B,V,D), loc_e (B,E,D) GCN nodes [use_local]; glo (B,D) GCN root [use_global];
        verb_probs (B,K_a), noun_probs (B,K_e) MIL scores over the words."""
        return self.text(t)

    # ------------------------------------------------------------------ scores
    def similarity_parts(self, ve: dict[str, Tensor], te: dict[str, Tensor]) -> dict[str, Tensor]:
        """All (B_v, B_t) score matrices. Parts of disabled levels are zero matrices (they do not
        enter c_l; `enabled_parts` lists the ones that do)."""
        cfg = self.cfg
        lam, fusion = cfg.attn_lambda, cfg.attn_fusion
        Bv, Bt = ve["verb_probs"].shape[0], te["verb_probs"].shape[0]
        zeros = ve["verb_probs"].new_zeros(Bv, Bt)
        parts: dict[str, Tensor] = {}

        def align(level: str, kind: str, v_mask: Tensor) -> Tensor:  # eqs. 16-17
            key, t_mask = f"{level}_{kind}", te["verb_mask" if kind == "a" else "noun_mask"]
            return stacked_attention(ve[key], v_mask, te[key], t_mask, lam, fusion)

        if cfg.use_individual:  # frames vs pre-GCN phrases
            parts["ind_a"] = align("ind", "a", ve["mask"])
            parts["ind_e"] = align("ind", "e", ve["mask"])
        if cfg.use_local:  # SeMe clips vs GCN verb / noun nodes
            parts["loc_a"] = align("loc", "a", ve["loc_a_mask"])
            parts["loc_e"] = align("loc", "e", ve["loc_e_mask"])
        if cfg.use_global:
            parts["glo"] = cosine_matrix(ve["glo"], te["glo"])
        parts["c_l"] = torch.stack([parts[k] for k in self.enabled_parts]).mean(0)  # eq. 19
        parts["jac_a"] = jaccard_matrix(ve["verb_probs"], te["verb_probs"])  # eq. 18
        parts["jac_e"] = jaccard_matrix(ve["noun_probs"], te["noun_probs"])
        parts["c_p"] = (parts["jac_a"] + parts["jac_e"]) / 2  # eq. 20
        return {k: parts.get(k, zeros) for k in PART_KEYS}

    def similarity(self, ve: dict[str, Tensor], te: dict[str, Tensor]) -> Tensor:
        """(B_v, B_t) inference score (c_l + c_p) / 2 (sec. 3.5.2)."""
        parts = self.similarity_parts(ve, te)
        return (parts["c_l"] + parts["c_p"]) / 2

    # ------------------------------------------------------------------ training
    def loss(self, v: VideoBatch, t: TextBatch, labels: ConceptLabels,
             positives: Tensor | None = None) -> dict[str, Tensor]:
        """Eq. 25 on a batch where row i of v pairs with row i of t (and of labels).
        `positives` (B, B) bool optionally marks other true pairs (not used as negatives)."""
        ve, te = self.encode_videos(v), self.encode_texts(t)
        return self.loss_from_parts(ve, te, self.similarity_parts(ve, te), labels, positives)

    def loss_from_parts(self, ve: dict[str, Tensor], te: dict[str, Tensor], parts: dict[str, Tensor],
                        labels: ConceptLabels, positives: Tensor | None = None) -> dict[str, Tensor]:
        """:meth:`loss` from the encoder outputs and score matrices (what training computes
        them under, e.g. bf16 autocast, is up to it; pipeline/learn/precision.py)."""
        cfg = self.cfg
        rank_l = hardest_negative_hinge(parts["c_l"], cfg.margin, positives)  # eq. 21
        rank_p = hardest_negative_hinge(parts["c_p"], cfg.margin, positives)  # eq. 22
        vi = labels.verb_ignore if cfg.mask_other_caption_concepts else None
        ni = labels.noun_ignore if cfg.mask_other_caption_concepts else None
        bce_video = (concept_bce(ve["verb_probs"], labels.verbs, vi)
                     + concept_bce(ve["noun_probs"], labels.nouns, ni))
        bce_text = (concept_bce(te["verb_probs"], labels.verbs, vi)
                    + concept_bce(te["noun_probs"], labels.nouns, ni))
        total = rank_l + cfg.eta * rank_p + cfg.mu * (bce_video + bce_text)
        return {"total": total, "rank_l": rank_l, "rank_p": rank_p,
                "bce_video": bce_video, "bce_text": bce_text}
