"""Training, evaluation and scheduled retraining flows over built shards.

Deployments (prefect.yaml): train/train-hanet, evaluate/evaluate-hanet,
retrain/retrain-hanet (cron; skips when the shards did not change).
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from flows import _feedback
from pipeline.learn.config import EvalConfig, TrainConfig
from models.metrics import format_metrics
from pipeline.devices import configure_threads
from pipeline.feedback import UserError, require_shards
from pipeline.learn import evaluate as evaluate_mod
from pipeline.learn import runs
from pipeline.learn import train as train_mod
from storage.atomic import atomic_write_text

_feedback.install_log_filters()  # a user error's traceback stays out of the run logs (pipeline/feedback.py)


@task(name="train-model")
def train_task(shards_root: str, run_dir: str, cfg: TrainConfig, resume: bool) -> dict:
    configure_threads()  # torch threads from the CPUs available (VTR_NUM_THREADS overrides)
    with _feedback.progress(f"train {cfg.model}", "epochs") as step:
        return train_mod.run_train(Path(shards_root), Path(run_dir), cfg, resume=resume,
                                   on_epoch_end=lambda epoch, _record: step(epoch + 1, cfg.epochs))


@task(name="evaluate-checkpoint")
def evaluate_task(checkpoint: str, shards_root: str, cfg: EvalConfig, out_dir: str | None,
                  expect_model: str | None = None) -> dict:
    configure_threads()
    with _feedback.progress(f"evaluate {Path(checkpoint).name} on {cfg.split}", "caption blocks") as step:
        return evaluate_mod.run_evaluate(Path(checkpoint), Path(shards_root), cfg,
                                         Path(out_dir) if out_dir else None, expect_model=expect_model, step=step)


def publish_report(report: dict, title: str) -> None:
    """Table artifact of the metrics + markdown with the heatmap paths; also printed."""
    create_table_artifact(runs.metrics_rows(report), key=None, description=title)
    md = runs.heatmaps_markdown(report)
    if md:
        create_markdown_artifact(md, description=title)
    print(f"{title}\n{format_metrics(report['metrics'], table=True)}")


@flow(name="evaluate", log_prints=True)
def evaluate(checkpoint: str, dataset: str = "sample", out_root: str = "out", split: str = "test",
             overrides: dict = {}, model: str = "") -> dict:
    """Score a checkpoint on a split: R@1/5/10, MedR, MeanR both directions, rsum.

    The checkpoint records which registered model it holds; ``model`` (optional) must match it."""
    if not Path(checkpoint).is_file():
        raise UserError(f"checkpoint={checkpoint!r}: no such file (a best.pt / last.pt written by `vtr train`)")
    require_shards(Path(out_root) / dataset, out_root)  # before the checkpoint's vocabulary is compared to it
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
    shards_root = require_shards(Path(out_root) / dataset, out_root)
    cfg = TrainConfig.model_validate({"model": model, "epochs": epochs, "batch_size": batch_size,
                                      "max_steps_per_epoch": max_steps_per_epoch, **overrides})
    run_dir, superseded = runs.run_dir_for(Path(runs_root), dataset, cfg, shards_root, run_name)
    if superseded is not None:
        logger.info("shards of %s changed since run %s (same config): starting a new run %s",
                    dataset, superseded.name, run_dir.name)
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
    shards_root = require_shards(Path(out_root) / dataset, out_root)
    fp = runs.retrain_fingerprint(shards_root, model, overrides)
    marker = runs.retrain_marker(Path(runs_root), dataset, model)
    if runs.retrained_on(marker) == fp:
        print(f"shards of {dataset} unchanged since the last retrain ({fp}): skipping")
        return {"skipped": True, "shards": fp}
    result = train(dataset=dataset, out_root=out_root, runs_root=runs_root, run_name=f"{dataset}-{fp}",
                   epochs=epochs, batch_size=batch_size, max_steps_per_epoch=max_steps_per_epoch,
                   overrides=overrides, model=model)
    atomic_write_text(marker, runs.retrain_record(fp, result["run_dir"]))
    return {"skipped": False, "shards": fp, **result}
