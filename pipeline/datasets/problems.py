"""What a shard-tree validation finds: the problem kinds, :class:`ValidationReport`, and the helpers the checks
of pipeline/datasets/validate.py share (tables read through storage, previews of offending keys)."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

from storage.atomic import TMP_MARK
from storage.schemas import schema
from storage.tables import SchemaError, read_table, table_schema


# Problem kinds (stable strings: tests and tooling match on them).
MISSING_ROOT = "missing_root"
MISSING_TABLE = "missing_table"
SCHEMA = "schema"                    # wrong schema name/version/columns, or unreadable table
UNKNOWN_TABLE = "unknown_table"      # a Parquet file under text/ of no known schema
DUPLICATE_KEY = "duplicate_key"
UNKNOWN_VIDEO = "unknown_video"      # a row/feature references a key not in videos.parquet
UNKNOWN_CAPTION = "unknown_caption"
SPLIT_MISMATCH = "split_mismatch"
MISSING_FEATURE = "missing_feature"  # no feature dataset and no error row
FEATURE_FOR_ERROR = "feature_for_error"
MISSING_STATUS_ROW = "missing_status_row"
BAD_STATUS = "bad_status"
FEATURE_FILE = "feature_file"        # unreadable file / wrong schema_version attr
FEATURE_DTYPE = "feature_dtype"
FEATURE_SHAPE = "feature_shape"      # not 2-D, empty, inconsistent D, n != n_features
FEATURE_VALUES = "feature_values"    # NaN/Inf (deep only)
TMP_FILE = "tmp_file"
MANIFEST = "manifest"                # unparsable manifest / wrong version / bad output path
MISSING_OUTPUT = "missing_output"
CHECKSUM = "checksum"                # unreadable checksums.json, missing file or sha256 mismatch


@dataclass(frozen=True)
class Problem:
    kind: str
    path: str  # relative to the dataset root ('.' for the root itself)
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.message}"


@dataclass
class ValidationReport:
    root: Path
    problems: list[Problem] = field(default_factory=list)
    checked: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __bool__(self) -> bool:  # truthy when clean
        return self.ok

    @property
    def kinds(self) -> set[str]:
        return {p.kind for p in self.problems}

    def add(self, kind: str, path: str | Path, message: str) -> None:
        self.problems.append(Problem(kind, self._rel(path), message))

    def _rel(self, path: str | Path) -> str:
        p = Path(path)
        try:
            return p.relative_to(self.root).as_posix() or "."
        except ValueError:
            return str(path)

    def summary(self) -> str:
        what = ", ".join(f"{n} {k}" for k, n in sorted(self.checked.items()))
        state = "clean" if self.ok else f"{len(self.problems)} problem(s)"
        return f"{self.root}: {state} (checked {what or 'nothing'})"

    def format(self, limit: int | None = None) -> str:
        lines = [str(p) for p in self.problems[:limit]]
        if limit is not None and len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more")
        lines.append(self.summary())
        return "\n".join(lines)


def _is_tmp(path: Path) -> bool:
    return path.name.startswith(TMP_MARK)


def _walk_files(root: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _safe_rel(root: Path, rel: str) -> Path | None:
    """``root / rel`` when ``rel`` is a relative path that stays inside ``root``."""
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts or "\\" in rel:
        return None
    return root / Path(*p.parts)


def _load_table(report: ValidationReport, path: Path, name: str, columns: list[str] | None = None):
    """read_table plus a column/type check; records a problem and returns None on failure."""
    try:
        table = read_table(path, name, columns=columns)
    except FileNotFoundError:
        report.add(MISSING_TABLE, path, f"table '{name}' not found")
        return None
    except SchemaError as e:
        report.add(SCHEMA, path, str(e).split(": ", 1)[-1])
        return None
    except Exception as e:  # corrupt Parquet, truncated file, ...
        report.add(SCHEMA, path, f"cannot read as Parquet table '{name}': {type(e).__name__}: {e}")
        return None
    report.checked["tables"] += 1
    try:
        on_disk = table_schema(path)
    except Exception as e:  # pragma: no cover - read_table already read it
        report.add(SCHEMA, path, f"cannot read schema: {e}")
        return None
    expected = schema(name)
    missing = [f.name for f in expected if f.name not in on_disk.names]
    wrong = [f"{f.name}: {on_disk.field(f.name).type} != {f.type}" for f in expected
             if f.name in on_disk.names and not on_disk.field(f.name).type.equals(f.type)]
    if missing or wrong:
        report.add(SCHEMA, path, f"columns differ from schema '{name}': "
                   + "; ".join(([f"missing {missing}"] if missing else []) + wrong))
        return None
    return table


def _col(table, name: str) -> list:
    return table.column(name).to_pylist()


def _duplicates(values: Iterable[Any]) -> list[Any]:
    return sorted((v for v, n in Counter(values).items() if n > 1), key=str)


def _preview(items: Sequence[Any], n: int = 5) -> str:
    items = list(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(map(str, items[:n])) + more
