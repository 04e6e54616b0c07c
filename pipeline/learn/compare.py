"""Model comparison table: one row per trained model (pure; the `compare` flow drives it).

Columns: t2v / v2t R@1, R@5, R@10, MedR, MeanR, rsum, trainable parameters, mean train
seconds per epoch, evaluation seconds. Written as JSON, markdown and a bar chart PNG.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from storage.atomic import atomic_path, atomic_write_text

METRICS = ("R@1", "R@5", "R@10", "MedR", "MeanR")
COLUMNS = (("model", "model"),
           *((f"t2v_{k}", f"t2v {k}") for k in METRICS),
           *((f"v2t_{k}", f"v2t {k}") for k in METRICS),
           ("rsum", "rsum"), ("params", "params"), ("train_s_per_epoch", "train s/epoch"),
           ("eval_s", "eval s"))


def comparison_row(model: str, report: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """One table row from an evaluation report and the run's config.json / history.json."""
    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    history = json.loads((run_dir / "history.json").read_text()) if (run_dir / "history.json").exists() else []
    secs = [float(r["train_seconds"]) for r in history]
    row: dict[str, Any] = {"model": model}
    for d in ("t2v", "v2t"):
        for k in METRICS:
            row[f"{d}_{k}"] = round(float(report[d][k]), 2)
    row["rsum"] = round(float(report["rsum"]), 2)
    row["params"] = int(cfg["trainable_parameters"])
    row["train_s_per_epoch"] = round(sum(secs) / len(secs), 3) if secs else None
    row["eval_s"] = round(float(report["metrics"]["seconds"]), 3)
    row["best_epoch"] = report.get("checkpoint_epoch")
    row["run_dir"] = str(run_dir)
    return row


def markdown_table(rows: list[dict[str, Any]], title: str = "") -> str:
    head = "| " + " | ".join(label for _, label in COLUMNS) + " |"
    sep = "|" + "|".join("---" if k == "model" else "---:" for k, _ in COLUMNS) + "|"

    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, int):
            return f"{v:,}"
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v)

    lines = [head, sep] + ["| " + " | ".join(cell(r.get(k)) for k, _ in COLUMNS) + " |" for r in rows]
    return (f"### {title}\n\n" if title else "") + "\n".join(lines) + "\n"


def bar_chart(rows: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Grouped bars: R@1/5/10 per direction (left), rsum (right), one colour per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [f"{d}_{k}" for d in ("t2v", "v2t") for k in ("R@1", "R@5", "R@10")]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [4, 1]})
    n = max(1, len(rows))
    width = 0.8 / n
    x = np.arange(len(keys))
    for i, r in enumerate(rows):
        ax.bar(x + (i - (n - 1) / 2) * width, [r[k] for k in keys], width, label=r["model"])
        ax2.bar(i, r["rsum"], 0.6, label=r["model"])
    ax.set_xticks(x, [k.replace("_", " ") for k in keys])
    ax.set_ylabel("recall (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    ax2.set_xticks(range(len(rows)), [r["model"] for r in rows])
    ax2.set_ylabel("rsum")
    ax2.set_ylim(0, 600)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def write_comparison(rows: list[dict[str, Any]], out_dir: Path, title: str = "",
                     meta: dict[str, Any] | None = None) -> dict[str, str]:
    """comparison.json / comparison.md / comparison.png under ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = markdown_table(rows, title)
    atomic_write_text(out_dir / "comparison.md", md)
    atomic_write_text(out_dir / "comparison.json", json.dumps({"rows": rows, **(meta or {})}, indent=2))
    bar_chart(rows, out_dir / "comparison.png", title)
    return {"markdown": str(out_dir / "comparison.md"), "json": str(out_dir / "comparison.json"),
            "chart": str(out_dir / "comparison.png")}


def check_models(models: list[str]) -> None:
    """Every name is a registered model, none listed twice: checked before any training."""
    from models import registry

    for m in models:
        registry.get_spec(m)
    if len(set(models)) != len(models):
        raise ValueError(f"models listed twice: {models}")


def comparison_dir(runs_root: str | Path, dataset: str, base: Any, models: list[str], split: str,
                   run_name: str = "") -> Path:
    """``runs_root/compare/<run_name>``, or by default ``<dataset>-<hash of config, models, split>``."""
    from pipeline.fingerprint import stable_hash

    key = run_name or f"{dataset}-{stable_hash([base, sorted(models), split], 8)}"
    return Path(runs_root) / "compare" / key


def artifact_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The comparison rows under their display labels (the table artifact)."""
    return [{label: r.get(k) for k, label in COLUMNS} for r in rows]
