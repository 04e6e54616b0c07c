"""The `compare` flow: train each chosen model on the same shards with the same seed, evaluate
each best checkpoint on the same split, and publish one table.

Deployment (prefect.yaml): compare/compare-models, e.g.
    prefect deployment run 'compare/compare-models' --param models='["hanet","hgr","hcmi"]' --watch

Outputs under ``<runs_root>/compare/<dataset>-<key>/``: one run folder per model (checkpoints,
report.json), ``comparison.md``, ``comparison.json`` and ``comparison.png``; plus a Prefect
table artifact and a markdown artifact with the same table.
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.train import evaluate_task, train_task
from pipeline.learn.config import EvalConfig, TrainConfig
from pipeline.feedback import require_shards
from pipeline.learn.compare import (artifact_table, check_models, comparison_dir, comparison_row, markdown_table,
                                    write_comparison)


@flow(name="compare", log_prints=True)
def compare(models: list[str] = ["hanet", "hgr", "hcmi"], dataset: str = "sample", out_root: str = "out",
            runs_root: str = "runs", run_name: str = "", epochs: int = 10, batch_size: int = 64,
            max_steps_per_epoch: int = 0, seed: int = 0, test_split: str = "test", resume: bool = True,
            overrides: dict = {}) -> dict:
    """Train + evaluate every model in ``models`` on ``dataset`` with the same seed, epochs and
    batch size; one comparison table (t2v/v2t R@1/5/10, MedR, MeanR, rsum, params, train
    s/epoch, eval s) as a table artifact, markdown, JSON and a bar chart PNG.

    ``overrides``: nested TrainConfig fields applied to every run, e.g.
    ``{"lr": 1e-3, "hgr": {"joint_dim": 512}, "hcmi": {"n_clips": 6}}`` (each model reads the
    entry under its own name).
    """
    check_models(models)  # unknown or repeated names fail before any training
    shards_root = require_shards(Path(out_root) / dataset, out_root)
    cfgs = {m: TrainConfig.model_validate({"epochs": epochs, "batch_size": batch_size, "seed": seed,
                                           "max_steps_per_epoch": max_steps_per_epoch, **overrides, "model": m})
            for m in models}
    out_dir = comparison_dir(runs_root, dataset, [c.model_dump(mode="json") for c in cfgs.values()], models,
                             test_split, run_name)
    rows = []
    for m, cfg in cfgs.items():
        run_dir = out_dir / m
        summary = train_task.with_options(name=f"train-{m}")(str(shards_root), str(run_dir), cfg, resume)
        report = evaluate_task.with_options(name=f"evaluate-{m}")(
            summary["best_checkpoint"], str(shards_root), EvalConfig(split=test_split, n_heatmaps=0), str(run_dir))
        rows.append(comparison_row(m, report, run_dir))
        print(f"{m}: rsum {rows[-1]['rsum']:.2f}, t2v R@1 {rows[-1]['t2v_R@1']:.2f}")
    title = f"{dataset}/{test_split}: {', '.join(models)} ({epochs} epochs, seed {seed})"
    paths = write_comparison(rows, out_dir, title, meta={
        "dataset": dataset, "shards_root": str(shards_root), "split": test_split, "seed": seed, "epochs": epochs,
        "batch_size": batch_size, "overrides": overrides})
    create_table_artifact(artifact_table(rows), key=None, description=f"model comparison: {title}")
    create_markdown_artifact(markdown_table(rows, title) + f"\n![chart]({paths['chart']})\n\nfiles: "
                             + ", ".join(f"`{p}`" for p in paths.values()), description=title)
    print(markdown_table(rows, title))
    return {"out_dir": str(out_dir), "rows": rows, **paths}
