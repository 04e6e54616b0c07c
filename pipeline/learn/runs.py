"""Where a training run lives and when a retrain is due, and the metrics table the flows publish.

No Prefect here: flows/train.py (and the CLI through it) call these and only log / publish.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.metrics import METRIC_COLUMNS
from pipeline.fingerprint import built_data_fingerprint, data_fingerprint, stable_hash
from pipeline.learn.config import TrainConfig


def run_dir_for(runs_root: Path, dataset: str, cfg: TrainConfig, shards_root: Path,
                run_name: str = "") -> tuple[Path, Path | None]:
    """(run directory, the run it supersedes or None).

    ``runs_root/<model>/<run_name>``, or by default ``<dataset>-<config hash>-<shards hash>``.
    Keyed by config AND the shards training reads (``data_fingerprint``): after the dataset was
    rebuilt, ``train`` starts a new run (the latest earlier run with the same config is returned
    for the caller to name) instead of failing to resume a run made on other shards; same
    config + same shards resumes.
    """
    base = runs_root / cfg.model
    if run_name:
        return base / run_name, None
    prefix = f"{dataset}-{stable_hash(run_identity(cfg), 8)}"
    run_dir = base / f"{prefix}-{data_fingerprint(shards_root, cfg.features)[:8]}"
    earlier = sorted((p for p in base.glob(f"{prefix}-*") if p != run_dir and (p / "last.pt").exists()),
                     key=lambda p: p.stat().st_mtime)
    return run_dir, (earlier[-1] if earlier and not run_dir.exists() else None)


def run_identity(cfg: TrainConfig) -> dict[str, Any]:
    """The config data a run directory is keyed by: the trained model's config only (as the runs keyed
    before pipeline.learn.config existed: their other models' configs were left out), and ``precision``
    left out at its default 'fp32', so runs keyed before the field existed keep their directories (a bf16
    run gets its own)."""
    d = cfg.model_dump(mode="json")
    if d.get("precision") == "fp32":
        d.pop("precision")
    return d


def metrics_rows(report: dict) -> list[dict]:
    """One row per direction, columns R@1..MeanR, plus rsum (the flows' table artifact)."""
    rows = []
    for direction in ("t2v", "v2t"):
        m = report[direction]
        rows.append({"direction": direction, **{k: round(float(m[k]), 2) for k in METRIC_COLUMNS}})
    rows.append({"direction": "rsum", "R@1": round(float(report["rsum"]), 2)})
    return rows


def heatmaps_markdown(report: dict) -> str:
    """Markdown listing the report's concept heatmap files ('' when it has none)."""
    heatmaps = report.get("heatmaps", [])
    return "### Concept heatmaps\n" + "\n".join(f"- `{p}`" for p in heatmaps) if heatmaps else ""


def retrain_marker(runs_root: Path, dataset: str, model: str) -> Path:
    """The file recording which shards ``model`` was last retrained on (one per dataset and model)."""
    return Path(runs_root) / "retrain" / (f"{dataset}.json" if model == "hanet" else f"{dataset}-{model}.json")


def retrain_fingerprint(shards_root: Path, model: str, overrides: dict[str, Any]) -> str:
    """The fingerprint train keys its run directory by, of the features ``model`` will read."""
    features = TrainConfig.model_validate({"model": model, **overrides}).features
    return built_data_fingerprint(shards_root, features)


def retrained_on(marker: Path) -> str | None:
    """The shards fingerprint of the last retrain, or None."""
    return json.loads(marker.read_text()).get("shards") if marker.exists() else None


def retrain_record(fingerprint: str, run_dir: str) -> str:
    """What the marker holds after a retrain."""
    return json.dumps({"shards": fingerprint, "run_dir": run_dir}, indent=2)
