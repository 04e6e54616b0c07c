"""Model configs as data: the paper setups as JSON presets (models/presets/<model>/<preset>.json), loaded by name."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from models import registry

PRESETS = Path(__file__).resolve().parents[1] / "models" / "presets"
# (feature size, frames) of the papers' features: MSR-VTT ResNet152 2048-d, 20 frames; VATEX I3D 1024-d, 30 frames
PAPER = {"msrvtt": (2048, 20), "vatex": (1024, 30)}


@pytest.mark.parametrize("model, preset", [("hanet", "msrvtt"), ("hanet", "vatex"), ("hgr", "msrvtt"), ("hgr", "vatex")])
def test_paper_presets_load_by_name_with_their_source(model, preset):
    doc = json.loads((PRESETS / model / f"{preset}.json").read_text())
    assert doc["model"] == model and doc["preset"] == preset and "/work/shared/" in doc["source"]
    cfg = registry.preset_config(model, preset)
    assert type(cfg) is registry.get_spec(model).config_cls
    assert (cfg.feat_dim, cfg.max_frames) == PAPER[preset]
    assert (cfg.word_dim, cfg.max_words, cfg.max_verbs, cfg.max_nouns, cfg.joint_dim) == (300, 30, 4, 6, 1024)
    if model == "hanet":
        assert (cfg.n_verb_concepts, cfg.n_noun_concepts, cfg.n_action_clips, cfg.n_entity_clips) == (512, 1024, 10, 20)
        assert (cfg.eta, cfg.mu, cfg.margin, cfg.fidelity) == (0.1, 0.01, 0.2, "reference")
    else:
        assert (cfg.graph_edges, cfg.gcn_num_layers, cfg.margin) == ("reference", 1, 0.2)
    assert set(registry.preset_names(model)) == set(PAPER)


def test_create_from_a_preset_with_overrides():
    model = registry.create("hgr", {"vocab_size": 30, "joint_dim": 32}, preset="vatex")
    assert (model.cfg.feat_dim, model.cfg.max_frames, model.cfg.joint_dim) == (1024, 30, 32)
    assert model.video.levels[0].in_features == 1024
    with pytest.raises(KeyError, match="no preset 'nope'.*msrvtt"):
        registry.preset_config("hanet", "nope")
