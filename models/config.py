"""HANet's config (defaults = the paper / reference code) and its reference-fidelity switches.

Training and evaluation settings are the application's: pipeline.learn.config (TrainConfig, EvalConfig).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .model_configs import ModelConfig


class HANetConfig(ModelConfig):
    # shapes (feat_dim, vocab_size, word_dim, n_verb_concepts = K_a, n_noun_concepts = K_e) and the
    # loader's caps (max_words/verbs/nouns/frames, frame_norm) come from _ModelConfig
    # widths
    joint_dim: int = Field(1024, description="D_v = D_s")
    gcn_attn_dim: int = Field(512, description="query/key size of the attention GCN")
    se_reduction: int = 16
    verb_kernel: int = Field(5, description="Conv1d kernel of the video action-concept head (eq. 1)")
    # dropouts
    dropout_video: float = 0.2
    dropout_text: float = 0.2
    dropout_gcn: float = 0.5
    # local level
    n_action_clips: int = Field(10, description="N_a: top verb concepts kept per video")
    n_entity_clips: int = Field(20, description="N_e: top noun concepts kept per video")
    action_window: int = Field(2, description="+- frames around a verb's argmax frame (clip of 5)")
    entity_topk_frames: int = Field(3, description="frames averaged per selected noun concept")
    mil_divisor: int = Field(8, description="tau = ceil(n_valid / mil_divisor), at least 1")
    # alignment
    attn_lambda: float = Field(4.0, description="stacked-attention temperature lambda")
    attn_fusion: Literal["embed", "sim"] = Field(
        "embed", description="stacked attention: 'embed' = cosine of the attended video vector with "
        "the text component (reference code); 'sim' = attention-weighted sum of cosines (paper eq. 17)")
    use_individual: bool = True
    use_local: bool = True
    use_global: bool = True
    use_seme: bool = Field(True, description="False = Table 4 'FC -> SeMe' ablation")
    use_gcn: bool = Field(True, description="False = Table 4 'FC -> relational GCN' ablation")
    # losses (eqs. 21-25)
    margin: float = 0.2
    eta: float = Field(0.1, description="weight of the concept (Jaccard) ranking loss")
    mu: float = Field(0.01, description="weight of the concept BCE losses")
    mask_other_caption_concepts: bool = Field(True, description="reference BCE masking; False = plain BCE")
    # reference fidelity (README "Reference fidelity"): one switch, each deviation overridable
    fidelity: Literal["reference", "improved"] = Field(
        "improved", description="'reference' = behave exactly as Roc-Ng/HANet e679703 (imported checkpoints); "
        "'improved' = this project's fixes. Each per-deviation switch below left at 'auto' follows it")
    verb_clips: Literal["auto", "reference", "clipped"] = Field(
        "auto", description="'reference': +-window mean around each selected verb's argmax frame only if ALL "
        "N_a argmax frames of the video lie in [window, n_valid-1-window], else every verb uses its argmax "
        "frame; 'clipped': each verb's window intersected with the real frames")
    noun_clips: Literal["auto", "reference", "topk"] = Field(
        "auto", description="'reference': mean of the top-k frames when the video has >= k frames, else the "
        "argmax frame; 'topk': mean of the top-min(k, n_valid) frames")
    padding: Literal["auto", "reference", "masked"] = Field(
        "auto", description="'reference': padded frames (Linear bias) enter the k=5 verb conv, the SE squeeze "
        "and BatchNorm statistics, padded words enter text BatchNorm statistics (an item's output depends "
        "on its batch-mates); 'masked': padding never leaks")
    graph_edges: Literal["auto", "reference", "improved"] = Field(
        "auto", description="'reference': root->verb, verb<->argument only, arguments in node order, no "
        "self loops, verb-less arguments unconnected; 'improved': root<->verb, self loops, arguments attached "
        "to a verb first, verb-less arguments hung off the root")

    def deviations(self) -> dict[str, str]:
        """The resolved per-deviation switches ('auto' replaced according to ``fidelity``)."""
        out = {}
        for name, (ref, ours) in FIDELITY_SWITCHES.items():
            v = getattr(self, name)
            out[name] = v if v != "auto" else (ref if self.fidelity == "reference" else ours)
        return out

    def deviation(self, name: str) -> str:
        return self.deviations()[name]

    def loader_graph_edges(self) -> str:
        return self.deviation("graph_edges")


# switch name -> (reference value, improved value)
FIDELITY_SWITCHES: dict[str, tuple[str, str]] = {
    "verb_clips": ("reference", "clipped"),
    "noun_clips": ("reference", "topk"),
    "padding": ("reference", "masked"),
    "graph_edges": ("reference", "improved"),
}
