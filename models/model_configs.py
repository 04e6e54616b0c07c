"""The base of every model's config, what the data loader reads of it, and HGR's config.

Pure pydantic (no torch). Every model config subclasses :class:`ModelConfig`: the shape fields
(filled from the shards at train time) and the data caps (``DATA_FIELDS``). The data loader
(pipeline.learn.dataset.load_split) reads only :class:`DataConfig`, which ``cfg.data_config()``
gives for any model's config.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# fields the data loader reads; every model config has them (HANetConfig too)
SHAPE_FIELDS = ("feat_dim", "vocab_size", "word_dim", "n_verb_concepts", "n_noun_concepts")
DATA_FIELDS = SHAPE_FIELDS + ("max_words", "max_verbs", "max_nouns", "max_frames")


class DataConfig(BaseModel):
    """What the data loader needs of a model: text graph caps, frames, frame normalisation, the
    role-graph edge rule (resolved: 'reference' or 'improved') and the concept counts of the labels."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_words: int
    max_verbs: int
    max_nouns: int
    max_frames: int
    frame_norm: Literal["none", "l2"]
    graph_edges: Literal["reference", "improved"]
    n_verb_concepts: int
    n_noun_concepts: int


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # shapes (set from the shards at train time; concept counts are only read by the loader's labels)
    feat_dim: int = Field(2048, description="frame feature size D_feat")
    vocab_size: int = Field(0, description="0 = read from the shards' words table")
    word_dim: int = Field(300, description="word embedding size (read from the embeddings file)")
    n_verb_concepts: int = Field(512, description="verb concept vocabulary size (loader labels)")
    n_noun_concepts: int = Field(1024, description="noun concept vocabulary size (loader labels)")
    # text graph caps (applied by the data loader)
    max_words: int = 30
    max_verbs: int = 4
    max_nouns: int = 6
    max_frames: int = Field(20, description="frames per video (20 MSR-VTT, 30 VATEX)")
    frame_norm: Literal["none", "l2"] = Field(
        "none", description="'l2' normalises each frame feature first (for random-backbone features)")
    graph_edges: Literal["reference", "improved"] = Field(
        "improved", description="role-graph edges the loader builds (HANetConfig.graph_edges): 'reference' = "
        "root->verb, verb<->argument, no self loops; 'improved' = root<->verb, self loops")

    def loader_graph_edges(self) -> str:
        """The edge rule the loader applies ('auto' resolved where a config has one)."""
        return self.graph_edges

    def data_config(self) -> DataConfig:
        return DataConfig(**{k: getattr(self, k) for k in DataConfig.model_fields if k != "graph_edges"},
                          graph_edges=self.loader_graph_edges())


class HGRConfig(ModelConfig):
    """HGR (Chen et al., CVPR 2020) as cshizhe/hgr_v2t's prepare_mlmatch_configs.py sets it up."""
    graph_edges: Literal["reference", "improved"] = "reference"
    joint_dim: int = Field(1024, description="dim_embed = rnn_hidden_size")
    dropout_video: float = Field(0.2, description="MultilevelEncoder dropout")
    dropout_text: float = Field(0.2, description="word-embedding dropout before the BiGRU")
    gcn_num_layers: int = Field(1, ge=0, description="role-graph GCN layers (0 = no message passing)")
    gcn_attention: bool = Field(True, description="attention GCN (reference run); False = plain GCN on "
                                                  "the row-normalised adjacency")
    gcn_attn_dim: int = Field(0, description="query/key size of the attention GCN; 0 = joint_dim // 2 "
                                             "(the reference's d_ff)")
    dropout_gcn: float = 0.5
    attn_lambda: float = Field(4.0, description="stacked-attention softmax temperature (simattn_sigma)")
    attn_fusion: Literal["embed", "sim"] = "embed"
    use_global: bool = Field(True, description="sentence level: cosine(attention-pooled event, graph root)")
    use_verb: bool = Field(True, description="verb level: stacked attention(action frames, verb nodes)")
    use_noun: bool = Field(True, description="noun level: stacked attention(entity frames, noun nodes)")
    margin: float = 0.2
    loss_weights: tuple[float, float, float, float] | None = Field(
        None, description="None = loss on the fused score only (reference run); else weights of "
                          "(fused, sentence, verb, noun) losses")
