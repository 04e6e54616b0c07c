"""Optional engines: skipped where not installed, but never silently in CI."""
from __future__ import annotations

import os

import pytest


def needs_prefect_ray():
    """prefect-ray (the optional Ray engine). Skipped where it is not installed, except in CI
    (scripts/install.sh installs requirements/ray.txt there, so a missing prefect-ray is a
    failure, not a skip)."""
    from flows import _stages

    if os.environ.get("CI"):
        return __import__("prefect_ray")
    return pytest.importorskip("prefect_ray", reason=f"optional prefect-ray not installed: {_stages.RAY_INSTALL}")
