"""The merge stage: one extractor's committed shards -> features/<extractor>/<split>.h5 + status.parquet.

Shards of mixed provenance (weights, config, sampling, device type, precision, library versions)
are refused with the shards named."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.stage import StageResult
from pipeline.video.shards import shard_outputs
from storage.features import merge_features, read_attrs
from storage.tables import read_table, write_table


_MUST_AGREE = ("extractor", "weights", "weights_sha256", "config", "sampling", "feature_dim")
PROVENANCE_MUST_AGREE = ("device_type", "precision_kind", "torch", "torchvision", "pytorchvideo", "av")


def _runtime(attrs: dict[str, Any]) -> dict[str, Any]:
    """The provenance fields every shard of one merged file must share (device index may differ)."""
    prov = attrs.get("provenance")
    prov = json.loads(prov) if isinstance(prov, (str, bytes)) else (prov or {})
    out = {k: prov.get(k) for k in PROVENANCE_MUST_AGREE}
    if out["device_type"] is None and prov.get("device"):  # shards written before device_type was recorded
        out["device_type"] = str(prov["device"]).split(":")[0]
    if out["precision_kind"] is None and prov.get("precision"):
        out["precision_kind"] = "bf16" if str(prov["precision"]).startswith("bf16") else "fp32"
    return out


def _check_provenance(parts: list[Path], attrs: list[dict[str, Any]]) -> None:
    runtimes = [_runtime(a) for a in attrs]
    mixed = {k for k in PROVENANCE_MUST_AGREE if len({str(r[k]) for r in runtimes}) > 1}
    if mixed:
        groups: dict[str, list[str]] = {}
        for part, r in zip(parts, runtimes):
            groups.setdefault(", ".join(f"{k}={r[k]}" for k in sorted(mixed)), []).append(part.stem)
        detail = "; ".join(f"{desc}: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
                           for desc, names in groups.items())
        raise ValueError(f"refusing to merge shards of mixed provenance ({', '.join(sorted(mixed))} differ): "
                         f"{detail}. Re-extract them on one device type / precision / library stack "
                         "(force the extractor stage)")


def _common_attrs(parts: list[Path]) -> dict[str, Any]:
    first = read_attrs(parts[0])
    _check_provenance(parts, [first] + [read_attrs(p) for p in parts[1:]])
    for part in parts[1:]:
        attrs = read_attrs(part)
        differ = [k for k in _MUST_AGREE if str(attrs.get(k)) != str(first.get(k))]
        if differ:
            raise ValueError(f"{part} differs from {parts[0]} in {differ}: shards were made with different "
                             "weights or settings; re-extract them with one configuration")
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in first.items()
            if k not in ("shard", "schema_version")}


def _require(paths: list[Path]) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard outputs missing (extract those shards first): {missing[:3]}")


def finalize_features(root: str | Path, extractor: str, shard_ids: list[str]) -> StageResult:
    """Merge shard parts into ``features/<extractor>/<split>.h5`` (one per split) and ``status.parquet``."""
    if not shard_ids:
        raise ValueError("finalize_features: no shards given")
    root, t0 = Path(root), time.perf_counter()
    parts = [root / shard_outputs(extractor, s)[0] for s in shard_ids]
    statuses = [root / shard_outputs(extractor, s)[1] for s in shard_ids]
    _require(parts + statuses)
    attrs = {**_common_attrs(parts), "shards": json.dumps(list(shard_ids))}
    table = pa.concat_tables([read_table(p, "feature_status").replace_schema_metadata(None) for p in statuses])
    rows = table.to_pylist()
    outputs = []
    for split in sorted({r["split"] for r in rows if r["split"]}):
        keys = {r["key"] for r in rows if r["split"] == split and r["status"] == "ok"}
        out = f"features/{extractor}/{split}.h5"
        merge_features(root / out, parts, keys, {**attrs, "split": split})
        outputs.append(out)
    write_table(root / f"features/{extractor}/status.parquet", "feature_status", table)
    outputs.append(f"features/{extractor}/status.parquet")
    n_ok = sum(r["status"] == "ok" for r in rows)
    return StageResult(outputs=outputs, counts={"ok": n_ok, "error": len(rows) - n_ok, "splits": len(outputs) - 1},
                       timings_s={"finalize": round(time.perf_counter() - t0, 3)})
