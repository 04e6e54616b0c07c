"""The `compare-features` flow (being written)."""
from __future__ import annotations

from prefect import flow


@flow(name="compare-features", log_prints=True)
def compare_features(a: str, b: str) -> dict:
    """Compare two feature sets (not yet implemented)."""
    raise NotImplementedError("compare-features is being written")
