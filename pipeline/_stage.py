"""What every stage function returns, so flows can record and cache it uniformly."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StageResult:
    """Outputs are paths RELATIVE to the dataset's shard root."""

    outputs: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
