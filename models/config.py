"""Model, training and evaluation hyper-parameters (defaults = the paper / reference code)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .model_configs import HCMIConfig, HGRConfig, _ModelConfig


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HANetConfig(_ModelConfig):
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


# switch name -> (reference value, improved value)
FIDELITY_SWITCHES: dict[str, tuple[str, str]] = {
    "verb_clips": ("reference", "clipped"),
    "noun_clips": ("reference", "topk"),
    "padding": ("reference", "masked"),
    "graph_edges": ("reference", "improved"),
}


class TrainConfig(_Config):
    model: str = Field("hanet", description="registry name (models/registry.py): hanet | hgr | hcmi")
    hanet: HANetConfig = HANetConfig()
    hgr: HGRConfig = HGRConfig()
    hcmi: HCMIConfig = HCMIConfig()
    features: str = Field("resnet152", description="feature folder under features/ to train on")
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 50
    patience: int = Field(10, description="early stop after this many epochs without val rsum gain")
    grad_clip: float = Field(0.0, description="0 = off")
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    unique_videos_per_batch: bool = Field(True, description="no same-video false negatives in a batch")
    val_split: str = "val"
    max_steps_per_epoch: int = Field(0, description="0 = full epoch (tests/demos cap it)")
    min_improvement: float = Field(0.0, description="val rsum must exceed the best by more than this to count as a gain")
    preload_features: bool = Field(False, description="read the train/val frame features into RAM once (else HDF5 per item)")
    log_every: int = Field(50, description="log the running loss every this many steps")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="'bf16' = torch.autocast(bfloat16) around the forward pass (encoders + scoring) where the "
        "device has native bf16 (pipeline.devices.bf16_is_fast: CUDA, CPUs with AVX512-BF16/AMX; elsewhere fp32 "
        "with a logged warning); the loss maths, master weights, gradients and Adam state stay fp32, no GradScaler "
        "(bf16 has fp32's exponent range). ~2x faster steps on such CPUs. Default fp32: the reference's numerics; "
        "bf16 (scores rounded to ~3 significant digits) is a choice to opt into (docs/models.md 'Training precision')")


class EvalConfig(_Config):
    split: str = "test"
    video_chunk: int = Field(500, description="videos scored per block")
    caption_chunk: int = Field(2000, description="captions encoded and scored per block")
    device: str = "auto"
    store_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="dtype of cached video embeddings between blocks")
    n_heatmaps: int = Field(4, description="test videos drawn as concept heatmaps")
    heatmap_top_k: int = Field(8, description="verb and noun concepts (each) shown per heatmap")
    encode_batch: int = Field(256, description="videos / captions per encode call (bounds encoder temporaries)")
    score_block: int = Field(500, description="captions per model.similarity call inside a caption chunk "
                                              "(bounds the fine-grained alignment temporaries)")
    features: str | None = Field(None, description="feature folder; None = the one the checkpoint trained on")
    prune_video_outputs: bool = Field(True, description="keep only the encode_videos outputs that similarity "
                                                        "reads (found on the first block) between blocks")
    text_bf16: bool = Field(False, description="bf16 autocast for caption encoding where the device has native bf16 "
                                               "(CUDA, AVX512-BF16/AMX CPUs; else fp32): ~2.5x faster on such CPUs, "
                                               "scores differ by ~5e-5 on average, <= ~5e-3 (bench/bench_bf16_scores.py; "
                                               "off: bit-exact reference parity)")
    score_bf16: bool = Field(False, description="the stacked-attention cosine matmul in bf16 where the device has native "
                                                "bf16 (models.similarity.cosine_matmul_dtype; attention and fusion stay "
                                                "fp32): ~2x faster scoring on such CPUs; deviation measured by "
                                                "bench/bench_bf16_scores.py (off: bit-exact reference parity)")
