"""Training, evaluation and scheduled retraining flows over built shards.

Deployments (prefect.yaml): train/train-hanet, evaluate/evaluate-hanet,
retrain/retrain-hanet (cron; skips when the shards did not change).
"""
from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from flows._stages import configure_threads
from models import registry
from models.config import EvalConfig, TrainConfig
from models.metrics import METRIC_COLUMNS, format_metrics
from pipeline.learn import evaluate as evaluate_mod
from pipeline.learn import train as train_mod
from pipeline.fingerprint import stable_hash
from pipeline.provenance import built_data_fingerprint, data_fingerprint
from storage.atomic import atomic_write_text


def run_dir_for(runs_root: Path, dataset: str, cfg: TrainConfig, shards_root: Path, run_name: str = "") -> Path:
    """``runs_root/<model>/<run_name>``, or by default ``<dataset>-<config hash>-<shards hash>``.

    Keyed by config AND the shards training reads (``data_fingerprint``): after the dataset was
    rebuilt, ``train`` starts a new run (logged, naming the earlier one) instead of failing to
    resume a run made on other shards; same config + same shards resumes.
    """
    base = runs_root / cfg.model
    if run_name:
        return base / run_name
    prefix = f"{dataset}-{stable_hash(registry.active_config_dump(cfg), 8)}"  # other models' configs excluded
    run_dir = base / f"{prefix}-{data_fingerprint(shards_root, cfg.features)[:8]}"
    earlier = sorted((p for p in base.glob(f"{prefix}-*") if p != run_dir and (p / "last.pt").exists()),
                     key=lambda p: p.stat().st_mtime)
    if earlier and not run_dir.exists():
        get_run_logger().info("shards of %s changed since run %s (same config): starting a new run %s",
                              dataset, earlier[-1].name, run_dir.name)
    return run_dir


def metrics_rows(report: dict) -> list[dict]:
    """One row per direction, columns R@1..MeanR, plus rsum."""
    rows = []
    for direction in ("t2v", "v2t"):
        m = report[direction]
        rows.append({"direction": direction, **{k: round(float(m[k]), 2) for k in METRIC_COLUMNS}})
    rows.append({"direction": "rsum", "R@1": round(float(report["rsum"]), 2)})
    return rows


@task(name="train-model")
def train_task(shards_root: str, run_dir: str, cfg: TrainConfig, resume: bool) -> dict:
    configure_threads()  # torch threads from the CPUs available (VTR_NUM_THREADS overrides)
    return train_mod.run_train(Path(shards_root), Path(run_dir), cfg, resume=resume)


@task(name="evaluate-checkpoint")
def evaluate_task(checkpoint: str, shards_root: str, cfg: EvalConfig, out_dir: str | None,
                  expect_model: str | None = None) -> dict:
    configure_threads()
    return evaluate_mod.run_evaluate(Path(checkpoint), Path(shards_root), cfg,
                                     Path(out_dir) if out_dir else None, expect_model=expect_model)


def publish_report(report: dict, title: str) -> None:
    """Table artifact of the metrics + markdown with the heatmap paths; also printed."""
    create_table_artifact(metrics_rows(report), key=None, description=title)
    heatmaps = report.get("heatmaps", [])
    if heatmaps:
        md = "\n".join(f"- `{p}`" for p in heatmaps)
        create_markdown_artifact(f"### Concept heatmaps\n{md}", description=title)
    print(f"{title}\n{format_metrics(report['metrics'], table=True)}")


@flow(name="evaluate", log_prints=True)
def evaluate(checkpoint: str, dataset: str = "sample", out_root: str = "out", split: str = "test",
             overrides: dict = {}, model: str = "") -> dict:
    """Score a checkpoint on a split: R@1/5/10, MedR, MeanR both directions, rsum.

    The checkpoint records which registered model it holds; ``model`` (optional) must match it."""
    cfg = EvalConfig.model_validate({"split": split, **overrides})
    report = evaluate_task(checkpoint, str(Path(out_root) / dataset), cfg, None, model or None)
    publish_report(report, f"{Path(checkpoint).name} on {dataset}/{split}")
    return report


@flow(name="train", log_prints=True)
def train(dataset: str = "sample", out_root: str = "out", runs_root: str = "runs", run_name: str = "",
          epochs: int = 50, batch_size: int = 64, max_steps_per_epoch: int = 0, resume: bool = True,
          test_split: str = "test", overrides: dict = {}, model: str = "hanet") -> dict:
    """Train a registered model (``model``: hanet | hgr | hcmi, models/registry.py) on a built
    dataset, then evaluate the best checkpoint on ``test_split``.

    ``overrides``: nested TrainConfig fields, e.g. ``{"hanet": {"use_local": false}}`` or
    ``{"hgr": {"gcn_num_layers": 2}}``.
    """
    logger = get_run_logger()
    shards_root = Path(out_root) / dataset
    cfg = TrainConfig.model_validate({"model": model, "epochs": epochs, "batch_size": batch_size,
                                      "max_steps_per_epoch": max_steps_per_epoch, **overrides})
    run_dir = run_dir_for(Path(runs_root), dataset, cfg, shards_root, run_name)
    summary = train_task(str(shards_root), str(run_dir), cfg, resume)
    logger.info("best epoch %s, val rsum %.2f", summary.get("best_epoch"), summary.get("best_rsum", 0.0))
    report = evaluate_task(summary["best_checkpoint"], str(shards_root), EvalConfig(split=test_split),
                           str(run_dir))
    publish_report(report, f"{cfg.model} {run_dir.name}: {dataset}/{test_split}")
    return {"run_dir": str(run_dir), "train": summary, "report": report}


@flow(name="retrain", log_prints=True)
def retrain(dataset: str = "sample", out_root: str = "out", runs_root: str = "runs",
            epochs: int = 50, batch_size: int = 64, max_steps_per_epoch: int = 0,
            overrides: dict = {}, model: str = "hanet") -> dict:
    """Retrain ``model`` when the dataset's shards changed since its last retrain; skip otherwise."""
    shards_root = Path(out_root) / dataset
    features = TrainConfig.model_validate({"model": model, **overrides}).features  # what training will read
    fp = built_data_fingerprint(shards_root, features)  # the fingerprint train keys its run directory by
    marker = Path(runs_root) / "retrain" / (f"{dataset}.json" if model == "hanet" else f"{dataset}-{model}.json")
    if marker.exists() and json.loads(marker.read_text()).get("shards") == fp:
        print(f"shards of {dataset} unchanged since the last retrain ({fp}): skipping")
        return {"skipped": True, "shards": fp}
    result = train(dataset=dataset, out_root=out_root, runs_root=runs_root, run_name=f"{dataset}-{fp}",
                   epochs=epochs, batch_size=batch_size, max_steps_per_epoch=max_steps_per_epoch,
                   overrides=overrides, model=model)
    atomic_write_text(marker, json.dumps({"shards": fp, "run_dir": result["run_dir"]}, indent=2))
    return {"skipped": False, "shards": fp, **result}
