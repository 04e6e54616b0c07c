"""The `export` flow: a built dataset in HGR's / HANet's released layout, for the authors' own code.

Deployment (prefect.yaml): export/export-released-layout. In-process: ``vtr export --dataset sample
--dest exports/sample``. What is written and refused: pipeline/datasets/export.py; the files:
storage/bundle_write.py; ``format=hgr-bundle`` reads an export back.
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact


@task(name="export-released-layout")
def export_task(shards_root: str, dest: str, features: list[str] | None, hanet_concepts: bool,
                overwrite: bool) -> dict:
    from pipeline.datasets.export import run_export

    return run_export(shards_root, dest, features=features, hanet_concepts=hanet_concepts, overwrite=overwrite)


def export_report(s: dict) -> str:
    c = s["counts"]
    lines = [f"# export of `{s['source']}`", "", f"to `{s['dest']}` (HGR/HANet released layout)", "",
             "| split | videos |", "|---|---|"]
    lines += [f"| {k.removesuffix('_videos')} | {c[k]} |" for k in ("train_videos", "val_videos", "test_videos")]
    lines += ["", "| feature set | folder | dim | frames |", "|---|---|---|---|"]
    lines += [f"| {n} | ordered_feature/SA/{f['folder']} | {f['dim']} | {f['frames']} |" for n, f in s["features"].items()]
    lines += ["", f"captions {c['captions']} ({c.get('captions_rewritten', 0)} written as their tokens), "
              f"role graphs {c['sentences']} ({c.get('graphs_failed', 0)} failed -> ROOT only), words {c['words']}, "
              f"embeddings {c['embedding_dim']}-d ({c['embedding_source']}) in {s['embeddings_file']}, "
              f"HANet concept files: {'yes' if c.get('hanet_concepts') else 'no'}"]
    if c["videos_left_out"]:
        lines += ["", f"{c['videos_left_out']} videos left out:"] + [f"- {r['key']}: {r['why']}" for r in s["left_out"]]
    return "\n".join(lines)


@flow(name="export", log_prints=True)
def export(dataset: str = "sample", out_root: str = "out", dest: str = "", features: list[str] = [],
           hanet_concepts: bool = True, overwrite: bool = False) -> dict:
    """Write ``out_root/dataset`` in the released layout that cshizhe/hgr_v2t and Roc-Ng/HANet read unmodified.

    ``dest``: the export folder (default ``exports/<dataset>``). ``features``: feature sets under
    features/ to export (default: all). ``hanet_concepts``: also write HANet's {verb,noun}_gt,
    _gt_all and _words_freq files. ``overwrite``: replace an earlier export in ``dest``.
    """
    dest = dest or str(Path("exports") / dataset)
    summary = export_task(str(Path(out_root) / dataset), dest, list(features) or None, hanet_concepts, overwrite)
    report = export_report(summary)
    print(report)
    create_markdown_artifact(report, description=f"export {dataset}")
    return summary
