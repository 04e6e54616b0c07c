"""build-index flow: encode every video of a built dataset once with a checkpoint -> search index.

Deployment (prefect.yaml): build-index/build-index. In-process: ``vtr index --checkpoint ...``.
The index goes to ``<checkpoint folder>/index`` unless ``index_dir`` is given; see
pipeline/search/index.py (what is stored) and storage/index.py (the files).
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows._feedback import install_log_filters

install_log_filters()  # a user error's traceback stays out of the run logs (pipeline/feedback.py)


@task(name="index-videos")
def index_task(checkpoint: str, shards_root: str, index_dir: str | None, splits: list[str] | None,
               n_thumbs: int, device: str, dataset_root: str | None) -> dict:
    from flows import _feedback
    from pipeline.search import index as search_index

    with _feedback.progress(f"index {Path(shards_root).name}", "videos") as step:
        return search_index.build_index(checkpoint, shards_root, index_dir, splits=splits, n_thumbs=n_thumbs,
                                        device=device, dataset_root=dataset_root, step=step)


@flow(name="build-index", log_prints=True)
def build_index(checkpoint: str = "runs/hanet/demo/best.pt", dataset: str = "sample", out_root: str = "out",
                index_dir: str = "", splits: list[str] = [], n_thumbs: int = 4, device: str = "cpu",
                dataset_root: str = "") -> dict:
    """Search index of every video of ``out_root/dataset`` (all splits unless ``splits``) for ``checkpoint``:
    the model's video encodings, global embeddings for the shortlist, concept scores and thumbnails."""
    meta = index_task(checkpoint, str(Path(out_root) / dataset), index_dir or None, list(splits) or None,
                      n_thumbs, device, dataset_root or None)
    from pipeline.search.index import index_report, index_summary

    print(index_summary(meta))
    create_markdown_artifact(index_report(meta), description="build-index")
    return {k: v for k, v in meta.items() if k not in ("train_config_json", "arrays")}
