"""The `compare-features` flow: per-video cosine between two feature sets of the same videos, with a
frame-alignment diagnosis (stride / start frame / half-step / resampling hypotheses); see
pipeline/video/feature_compare.py.

Deployment (prefect.yaml): compare-features/compare-features. In-process:
``vtr compare-features out/msrvtt/features/resnet152 /data/hgr/MSRVTT/ordered_feature/SA/resnet152.pth``.
Outputs under ``out_dir``: compare.md, compare.json, per_video.csv, histogram.png; plus a table
artifact (worst videos first) and a markdown artifact.
"""
from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact


@task(name="compare-feature-sets")
def compare_task(a: str, b: str, out_dir: str, a_stride: int, a_start: int, worst: int) -> dict:
    from pipeline.video.feature_compare import run_compare_features

    return run_compare_features(a, b, out_dir, a_stride, a_start, worst)


@flow(name="compare-features", log_prints=True)
def compare_features(a: str, b: str, out_dir: str = "runs/compare-features", a_stride: int = 0,
                     a_start: int = 0, worst: int = 10) -> dict:
    """Compare feature sets ``a`` and ``b`` (each a feature file or folder: ours ``features/<set>/`` or
    a release's ``ordered_feature/SA/<feature>/``), videos aligned by id.

    ``out_dir``: where compare.md / compare.json / per_video.csv / histogram.png go. ``a_stride``:
    video frames between two of A's features (e.g. 16), to state the alignment in video frames
    (0: unknown). ``a_start``: the video frame of A's first feature. ``worst``: videos listed.
    """
    from pipeline.video.feature_compare import COLUMNS

    result = compare_task(a, b, out_dir, a_stride, a_start, worst)
    rows = sorted(result["rows"], key=lambda r: (r["cos_winner"] if r["cos_winner"] is not None else -2.0))
    create_table_artifact([{c: r[c] for c in COLUMNS} for r in rows], description="compare-features: worst first")
    create_markdown_artifact(result["markdown"] + f"\n![histogram]({result['paths']['histogram']})\n",
                             description="compare-features")
    print(result["markdown"])
    return {k: v for k, v in result.items() if k not in ("rows", "markdown")}
