"""The error contract (pipeline/feedback.py) and progress applied to Prefect and the terminal.

- :func:`install_log_filters`: in every process that runs a flow (CLI, worker), a user error's record
  loses its traceback (the message stays: it is the run's state message too); ``VTR_DEBUG=1`` keeps it.
- :func:`setup_cli_logging`: `vtr` only. INFO lines go to stdout, warnings and errors to stderr (a failed
  command's stderr is its one-line message), Prefect's own failure records are left to the CLI, which
  prints the message once; an in-process (ephemeral) run hides Prefect's shutdown noise of its
  temporary server's services.
- :func:`check_server`: an unreachable ``PREFECT_API_URL`` is one user error saying what to do.
- :func:`progress`: a rich bar (count, rate, ETA) when stderr is a terminal and a Prefect progress
  artifact when in a run, both driven by a ``(done, total)`` callback (pipeline/progress.py).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import urllib.error
import urllib.request
from typing import Iterator

from pipeline.feedback import UserError, debug_enabled, is_user_error
from pipeline.progress import StepFn

_ENGINE_FAILURE = ("Encountered exception during execution", "Task run failed with", "Finished in state Failed")
_SHUTDOWN_NOISE = ("Cannot put items in a stopped service", "failed with %s pending items",
                   "failed to process item", "failed to process batch", "Still processing items")


class _TracebackOfUserErrors(logging.Filter):
    """A user error's record keeps its message, loses its traceback (unless VTR_DEBUG=1)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_user_error(exc) and not debug_enabled():
            if str(record.msg).startswith("Engine execution exited with unexpected exception"):
                return False  # Prefect's second report of the same failure, with nothing new in it
            record.exc_info, record.exc_text = None, None
        return True


class _CliQuiet(logging.Filter):
    """`vtr` console: the engine's failure records are dropped (the CLI prints the message once, or the
    traceback of a bug); in-process runs drop the temporary server's services' shutdown errors."""

    def __init__(self, ephemeral: bool):
        super().__init__()
        self.ephemeral = ephemeral

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if record.name.startswith(("prefect.flow_runs", "prefect.task_runs")) and msg.startswith(_ENGINE_FAILURE):
            return False
        if self.ephemeral and any(s in msg for s in _SHUTDOWN_NOISE):
            return False
        return True


class _Below(logging.Filter):
    def __init__(self, level: int, below: bool):
        super().__init__()
        self.level, self.below = level, below

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.levelno < self.level) == self.below


class _SysStream:
    """sys.stdout / sys.stderr looked up at each write (a progress bar redirects them while it shows)."""

    def __init__(self, name: str):
        self.name = name

    def __getattr__(self, attr):
        return getattr(getattr(sys, self.name), attr)

    def write(self, text: str) -> int:
        return getattr(sys, self.name).write(text)

    def flush(self) -> None:
        getattr(sys, self.name).flush()

    def isatty(self) -> bool:
        return getattr(sys, self.name).isatty()


def _filtered_handlers() -> Iterator[logging.Handler]:
    names = ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.extra", "prefect._internal")
    seen = set()
    for name in names:
        for h in logging.getLogger(name).handlers:
            if id(h) not in seen:
                seen.add(id(h))
                yield h


def install_log_filters() -> None:
    """Strip user errors' tracebacks from every Prefect handler (console and API): idempotent."""
    for h in _filtered_handlers():
        if not any(isinstance(f, _TracebackOfUserErrors) for f in h.filters):
            h.addFilter(_TracebackOfUserErrors())


def setup_cli_logging(debug: bool) -> None:
    """`vtr`: Prefect's console handler split into INFO -> stdout, WARNING+ -> stderr; quiet failures."""
    from prefect.logging.handlers import PrefectConsoleHandler

    install_log_filters()
    if debug:
        return
    import warnings

    # torch.jit's deprecation notices (the I3D inference form traces + freezes) are not the user's concern; the
    # random-weights UserWarning is also logged as a WARNING by pipeline.video.backbones: once is loud enough
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
    warnings.filterwarnings("ignore", message=r".*RANDOM weights", category=UserWarning)
    ephemeral = not os.environ.get("PREFECT_API_URL")
    if ephemeral:
        logging.raiseExceptions = False  # a log record sent to the stopped temporary server: no '--- Logging error ---'
    root = logging.getLogger()
    for h in list(root.handlers):
        if not isinstance(h, PrefectConsoleHandler) or getattr(h, "_vtr_split", False):
            continue
        root.removeHandler(h)
        for stream, below in (("stdout", True), ("stderr", False)):
            new = PrefectConsoleHandler(stream=_SysStream(stream), level=h.level)
            new.setFormatter(h.formatter)
            new._vtr_split = True
            for f in (_Below(logging.WARNING, below), _TracebackOfUserErrors(), _CliQuiet(ephemeral)):
                new.addFilter(f)
            root.addHandler(new)
    quiet = _CliQuiet(ephemeral)
    for name in ("prefect._internal", "prefect._internal.concurrency", "prefect.events", "prefect.client"):
        logging.getLogger(name).addFilter(quiet)


def check_server(timeout_s: float = 20.0) -> None:
    """A set ``PREFECT_API_URL`` must answer; else one user error: start the server or run in-process.
    (A closed port is refused at once; the timeout only matters for a busy server.)"""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return  # in-process: Prefect starts a temporary server of its own
    try:
        urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout_s).close()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        port = os.environ.get("VTR_PREFECT_PORT", "4200")
        reason = getattr(exc, "reason", exc)
        raise UserError(f"PREFECT_API_URL={url}: no Prefect server answers ({reason}). Start one with "
                        f"`make prefect-up` (port VTR_PREFECT_PORT={port}), or run in-process without a server: "
                        "`unset PREFECT_API_URL` (or `env -u PREFECT_API_URL vtr ...`)") from None


def environment_error(exc: BaseException) -> str | None:
    """A failure of the environment the user can act on, as one line (None: not one of them)."""
    if isinstance(exc, RuntimeError) and "ephemeral Prefect API server" in str(exc):
        return ("Prefect's temporary in-process server did not start in time (a busy machine?): start a "
                "server once with `make prefect-up` and `source scripts/env.sh` (PREFECT_API_URL), or allow "
                "longer: PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=300")
    return None


def _in_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


class _Bar:
    """A rich progress bar on stderr: description, bar, done/total, rate, elapsed and ETA."""

    def __init__(self, description: str, unit: str):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)
        from rich.console import Console

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=Console(file=sys.stderr), transient=False)
        self.unit = unit
        self.task = self.progress.add_task(description, total=None, rate="")
        self.progress.start()

    def update(self, done: int, total: int) -> None:
        t = self.progress.tasks[0]
        speed = t.speed
        rate = f"{speed:.2f} {self.unit}/s" if speed and speed >= 0.1 else (
            f"{60 * speed:.1f} {self.unit}/min" if speed else "")
        self.progress.update(self.task, completed=done, total=total, rate=rate)

    def close(self) -> None:
        self.progress.stop()


@contextlib.contextmanager
def progress(description: str, unit: str = "steps", prefect: bool = True) -> Iterator[StepFn]:
    """A ``(done, total)`` callback moving a terminal bar (stderr is a TTY; ``VTR_NO_PROGRESS=1`` turns it
    off) and, inside a Prefect run (``prefect``), a progress artifact (percent), at the same granularity."""
    bar = _Bar(description, unit) if sys.stderr.isatty() and not os.environ.get("VTR_NO_PROGRESS") else None
    artifact = None
    if prefect and _in_run():
        from prefect.artifacts import create_progress_artifact

        artifact = create_progress_artifact(progress=0.0, description=f"{description} ({unit})")
    last = [-1.0]

    def step(done: int, total: int) -> None:
        if bar is not None:
            bar.update(done, total)
        pct = 100.0 * done / total if total else 100.0
        if artifact is not None and pct != last[0]:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(artifact, progress=pct)
            last[0] = pct

    try:
        yield step
    finally:
        if bar is not None:
            bar.close()
