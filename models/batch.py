"""The tensors a retrieval model consumes: the contract between data loading and models."""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

# The 16 semantic-role types (K_r = 16) of the role graphs; ROOT nodes use id ROOT_ROLE.
ROLES: tuple[str, ...] = (
    "V", "ARG0", "ARG1", "ARG2", "ARG3", "ARG4", "ARGM-LOC", "ARGM-MNR", "ARGM-TMP",
    "ARGM-DIR", "ARGM-ADV", "ARGM-PRP", "ARGM-PRD", "ARGM-COM", "ARGM-MOD", "NOUN",
)
ROLE_IDS = {r: i for i, r in enumerate(ROLES)}
ROOT_ROLE = len(ROLES)  # an extra embedding row for the sentence root


def role_id(role: str) -> int:
    """Map a raw role (C-/R- prefixes stripped) to its id; unknown roles become NOUN."""
    base = role[2:] if role[:2] in ("C-", "R-") else role
    return ROLE_IDS.get(base, ROLE_IDS["NOUN"])


class _Batch:
    def to(self, device: torch.device | str):
        return type(self)(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def __len__(self) -> int:
        return int(getattr(self, fields(self)[0].name).shape[0])


@dataclass
class VideoBatch(_Batch):
    feats: torch.Tensor  # (B, N, D_feat) float32, zero-padded along N
    mask: torch.Tensor   # (B, N) bool, True = real frame; every row has >= 1 True


@dataclass
class TextBatch(_Batch):
    word_ids: torch.Tensor    # (B, L) long, padded with the vocabulary's PAD id; L <= max_words
    lengths: torch.Tensor     # (B,) long, >= 1
    node_masks: torch.Tensor  # (B, 1 + V + E, L) float: word-span masks; node 0 = ROOT (whole sentence),
                              # nodes 1..V verbs, V+1..V+E nouns/arguments (V = max_verbs, E = max_nouns)
    node_roles: torch.Tensor  # (B, 1 + V + E) long role ids (ROLES index; ROOT_ROLE for node 0)
    node_valid: torch.Tensor  # (B, 1 + V + E) bool, False for empty slots (ROOT always True)
    adjacency: torch.Tensor   # (B, 1 + V + E, 1 + V + E) float {0,1}: root<->verb, verb<->argument, self loops


@dataclass
class ConceptLabels(_Batch):
    verbs: torch.Tensor       # (B, K_a) float multi-hot of the caption's verb concepts
    nouns: torch.Tensor       # (B, K_e) float multi-hot of the caption's noun concepts
    verb_ignore: torch.Tensor  # (B, K_a) bool: concepts of the video's OTHER captions absent here
    noun_ignore: torch.Tensor  # (B, K_e) bool  (masked out of BCE when HANetConfig.mask_other_caption_concepts)
