"""What a user is told when something goes wrong: one error contract for every `vtr` command and flow.

A *user error* (a bad parameter, a missing file, an unreachable server, refused weights) is ONE
message naming the parameter and what to do: `vtr` prints it on one line and exits 2, a Prefect run
fails with it as its state message, and neither shows a traceback (``--debug`` / ``VTR_DEBUG=1``
shows them). Anything else is a bug and keeps its traceback. No Prefect here: flows/_feedback.py
applies this to Prefect's logging, flows/cli.py to the command line.
"""
from __future__ import annotations

import os
from pathlib import Path


class UserError(Exception):
    """A mistake the user can fix; the message names the parameter and what to do."""


# ValueError covers pydantic's ValidationError (a bad config field) and every ``raise ValueError`` of a
# refused parameter; the OSError subclasses are files named by the user that are missing or unreadable.
USER_ERROR_TYPES: tuple[type[BaseException], ...] = (UserError, ValueError, FileNotFoundError, NotADirectoryError,
                                                     IsADirectoryError, PermissionError)


def is_user_error(exc: BaseException | None) -> bool:
    return isinstance(exc, USER_ERROR_TYPES)


def debug_enabled() -> bool:
    """``VTR_DEBUG=1`` (or true/yes): show tracebacks of user errors too."""
    return os.environ.get("VTR_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (a pydantic ValidationError as 'field: problem; ...')."""
    errors = getattr(exc, "errors", None)
    if callable(errors) and type(exc).__name__ == "ValidationError":
        try:
            parts = [f"{'.'.join(map(str, e.get('loc', ()))) or 'value'}: {e.get('msg')}"
                     + (f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else "")
                     for e in errors()]
            return f"invalid {getattr(exc, 'title', 'config')}: " + "; ".join(parts)
        except Exception:  # noqa: BLE001 - fall back to the plain text
            pass
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    return " ".join(text.split())


def require_shards(shards_root: str | Path, out_root: str | Path | None = None) -> Path:
    """``out_root/dataset`` exists (a built dataset), else a user error naming ``dataset`` / ``out_root``."""
    root = Path(shards_root)
    if not root.is_dir():
        where = f" (out_root={str(out_root)!r})" if out_root is not None else ""
        raise UserError(f"dataset={root.name!r}: {root} does not exist{where}; build it first "
                        f"(`vtr build --dataset {root.name} ...`) or pass --dataset / --out-root of a built dataset")
    return root
