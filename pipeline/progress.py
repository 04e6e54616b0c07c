"""The progress callback the stages report through (no Prefect, no terminal code here).

A long stage takes ``step: StepFn | None`` and calls ``step(done, total)`` after each unit of work
(a shard, an epoch, a block of captions, a batch of videos). flows/_feedback.py renders it: a rich
progress bar in a terminal and a Prefect progress artifact inside a run.
"""
from __future__ import annotations

from typing import Callable

StepFn = Callable[[int, int], None]


def report(step: StepFn | None, done: int, total: int) -> None:
    """Call ``step`` if there is one (stages pass ``None`` through when nobody watches)."""
    if step is not None:
        step(done, total)
