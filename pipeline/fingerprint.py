"""Every fingerprint the project computes, in one module: the hash rule (:func:`stable_hash`), files
(:func:`sha256_file`, :func:`file_fingerprint`, :func:`content_fingerprint`), stage code
(:func:`code_version`), stage cache keys (:func:`stage_key`, :func:`multi_stage_key`), a shard's videos
(:func:`shard_fingerprint`), the shards a training run reads (:func:`data_fingerprint`), a vocabulary
(:func:`vocabulary_fingerprint`) and a model's weights (:func:`state_dict_sha256`).

Torch-free and light to import (a cached build plans every key without torch); the readers a
fingerprint needs are imported inside it. Not here, on purpose: ``storage.index.safe_name`` (a file-name
rule of the index format; storage/ imports nothing from pipeline/) and ``pipeline.runtime.identity`` /
``runtime_fingerprint`` (the machine probe's answers; hashed with :func:`stable_hash`)."""
from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Mapping, Sequence

from pydantic import BaseModel


def stable_hash(obj: Any, n: int = 16) -> str:
    """sha256 of the canonical JSON of ``obj`` (pydantic models dumped first)."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Content-sensitive but cheap: path, size and mtime_ns (missing files included)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return {"path": str(p), "missing": True}
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def content_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Keyed by content: the file's sha256 (a same-size, same-mtime replacement is noticed; a moved or
    copied file with the same bytes is the same input). Memoised per process by (path, size, mtime_ns,
    ctime_ns, inode): a replacement always changes the inode or the ctime, which no tool can set back."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return {"path": str(p), "missing": True}
    ident = (str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if ident not in _SHA_MEMO:
        _SHA_MEMO[ident] = sha256_file(p)
    return {"sha256": _SHA_MEMO[ident]}


_SHA_MEMO: dict[tuple, str] = {}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# The project's own packages: their modules count in code fingerprints; third-party code counts
# through the library versions recorded in the feature stages' keys instead.
PROJECT_PACKAGES = ("pipeline", "storage", "models", "flows")
REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_SUFFIXES = (".txt", ".json", ".yaml", ".tsv")


def _module_file(name: str, root: Path) -> Path | None:
    parts = name.split(".")
    if parts[0] not in PROJECT_PACKAGES:
        return None
    base = root.joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(name: str, path: Path) -> set[str]:
    """Every module name an ``import`` anywhere in ``path`` may load (functions' bodies included);
    parsed once per process and file version (a build computes a dozen stage keys)."""
    st = path.stat()
    return set(_parsed_imports(name, str(path), st.st_mtime_ns, st.st_size))


@functools.lru_cache(maxsize=1024)
def _parsed_imports(name: str, file: str, mtime_ns: int, size: int) -> frozenset[str]:
    path = Path(file)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)  # `from pkg import submodule`
    with_parents = set()
    for mod in out:
        parts = mod.split(".")
        with_parents.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))  # packages' __init__ run too
    return frozenset(with_parents)


def module_closure(names: Iterable[str], root: str | os.PathLike | None = None) -> dict[str, Path]:
    """The project modules ``names`` import, transitively (by scanning their source), with their files."""
    root = Path(root or REPO_ROOT)
    seen: dict[str, Path] = {}
    todo = list(names)
    for name in list(todo):
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name, root)
        if path is None:
            continue
        seen[name] = path
        todo.extend(_imported_names(name, path) - seen.keys())
    for name, path in list(seen.items()):  # data files a package reads (e.g. pipeline/text/stopwords_en.txt)
        if path.name == "__init__.py":
            for data in sorted(path.parent.iterdir()):
                if data.suffix in DATA_SUFFIXES and data.is_file():
                    seen[f"{name}/{data.name}"] = data
    return dict(sorted(seen.items()))


def code_fingerprint(names: Iterable[str], root: str | os.PathLike | None = None) -> str:
    """Hash of the source of ``names`` and of every project module they import, transitively."""
    root = Path(root or REPO_ROOT)
    files = module_closure(names, root)
    return stable_hash([(name, path.read_text()) for name, path in files.items()], n=12)


def code_version(*modules: ModuleType | str) -> str:
    """Code fingerprint of the modules a stage runs (module objects or dotted names: a name is not
    imported), computed over their import closure: editing any project module they
    (transitively) import invalidates their caches."""
    names = [m if isinstance(m, str) else m.__name__ for m in modules]
    outside = [n for n in names if _module_file(n, REPO_ROOT) is None]
    extra = [inspect.getsource(sys.modules[n]) for n in outside]  # e.g. a test module: hash its source
    return stable_hash([code_fingerprint(names), extra], n=12) if extra else code_fingerprint(names)


# ----------------------------------------------------------------------------- stage cache keys
def stage_key(stage: str, config: Any, code: str, inputs: Any) -> str:
    """Cache key of one stage (or shard): what it runs, with what, on what."""
    return stable_hash({"stage": stage, "config": config, "code": code, "inputs": inputs})


def multi_stage_key(shard: str | None, plans: Sequence[Mapping[str, Any]]) -> str:
    """Prefect cache key of a combined task: its shard and every (stage, key) it must produce."""
    return stable_hash({"shard": shard, "stages": [[p["stage"], p["key"]] for p in plans]})


def shard_fingerprint(spec: Any) -> str:
    """A feature shard's videos (a ``pipeline.video.shards.ShardSpec``): changes when a video file
    (path, size, mtime) or an ingest status changes."""
    files = [file_fingerprint(p) for p in spec.paths]
    return stable_hash({"id": spec.id, "keys": spec.keys, "statuses": spec.statuses, "files": files})


# ----------------------------------------------------------------------------- data a run reads
def data_fingerprint(root: str | os.PathLike, extractor: str) -> str:
    """Hash of what training reads: table row counts/schema tags/sizes, feature file sizes,
    stage manifest keys. Path- and mtime-free, so a copied shard tree keeps its hash."""
    from storage.manifest import manifest_files, read_manifest_data
    from storage.tables import table_stats

    root = Path(root)
    items: list[Any] = []
    tables = [root / "videos.parquet", root / "captions.parquet", *sorted((root / "text").glob("*.parquet"))]
    for p in tables:
        if p.exists():
            num_rows, meta = table_stats(p)
            items.append([p.relative_to(root).as_posix(), num_rows, meta, p.stat().st_size])
    for p in [root / "text" / "embeddings.h5", *sorted((root / "features" / extractor).glob("*.h5"))]:
        if p.exists():
            items.append([p.relative_to(root).as_posix(), p.stat().st_size])
    for p in manifest_files(root):
        try:
            m = read_manifest_data(p)
            items.append([p.relative_to(root).as_posix(), m.get("key"), m.get("counts")])
        except (OSError, ValueError):
            items.append([p.relative_to(root).as_posix(), "unreadable"])
    return stable_hash(items)


def built_data_fingerprint(root: str | os.PathLike, extractor: str) -> str:
    """:func:`data_fingerprint` of a dataset that was built (FileNotFoundError when ``root`` has no
    committed stage): what scheduled retraining compares with the fingerprint of its last run."""
    from storage.manifest import manifest_files

    if not manifest_files(root):
        raise FileNotFoundError(f"{root}: no committed stages; run a build-features deployment first")
    return data_fingerprint(root, extractor)


def vocabulary_fingerprint(words: Mapping[str, int], concepts: Mapping[str, list[str]]) -> str:
    """Hash of a word vocabulary ({word: id}, hashed in id order) and the concept vocabularies
    ({'verb'|'noun': [lemma by id]}; {} when the shards have none)."""
    return stable_hash({"words": sorted((i, w) for w, i in words.items()), "concepts": dict(concepts)})


# ----------------------------------------------------------------------------- weights
def state_dict_sha256(model: Any) -> str:
    """sha256 over (name, dtype, shape, bytes) of every state-dict entry of a torch module, in order."""
    import torch

    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()
