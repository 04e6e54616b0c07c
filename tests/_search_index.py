"""A small planted-signal search index for the search tests (real HANet, random init, tiny dims)."""
from __future__ import annotations

from pathlib import Path

import torch

from models.config import HANetConfig
from pipeline.learn.config import TrainConfig
from models.hanet import HANet
from pipeline.learn.dataset import dataset_shapes, load_word_embeddings
from pipeline.datasets.planted import make_planted_shards
from storage.checkpoints import save_checkpoint
from storage.tables import read_table, write_table


def small_hanet_config(root: Path) -> TrainConfig:
    shapes = dataset_shapes(root, "resnet152", "train")
    h = HANetConfig(joint_dim=32, gcn_attn_dim=16, max_frames=12, n_action_clips=4, n_entity_clips=6,
                    se_reduction=8, **shapes)
    return TrainConfig(hanet=h)


def make_checkpoint(root: Path, path: Path, seed: int = 0) -> Path:
    cfg = small_hanet_config(root)
    torch.manual_seed(seed)
    model = HANet(cfg.net, load_word_embeddings(root))
    return save_checkpoint(path, {"model_name": "hanet", "config_json": cfg.model_dump_json(), "epoch": 0,
                                  "model": model.state_dict(), "data_fingerprint": ""})


def make_search_fixture(tmp: Path, n_videos: int = 60, n_sources: int = 3, missing: int = 1):
    """Planted shards + checkpoint; the first ``n_sources`` videos get real source files under
    ``tmp/videos`` (thumbnails), the next ``missing`` point at files that do not exist.
    Returns (shards_root, checkpoint, dataset_root)."""
    from tests._videos import make_video

    root = make_planted_shards(tmp / "shards", n_videos=n_videos, captions_per_video=2, n_verbs=8, n_nouns=12,
                               feat_dim=64, n_frames=12, seed=0)
    vroot = tmp / "videos"
    vroot.mkdir(parents=True, exist_ok=True)
    rows = read_table(root / "videos.parquet", "videos").to_pylist()
    for i, r in enumerate(rows):
        if i < n_sources:
            make_video(vroot / f"{r['key']}.mp4", n_frames=24, size=(64, 48))
            r["path"] = f"{r['key']}.mp4"
        elif i < n_sources + missing:
            r["path"] = f"{r['key']}-gone.mp4"
    write_table(root / "videos.parquet", "videos", rows)
    ck = make_checkpoint(root, tmp / "run" / "best.pt")
    return root, ck, vroot
