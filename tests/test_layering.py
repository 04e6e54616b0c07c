"""The layering the README promises, checked on the source (ast; nothing is imported):

* storage/ is the only package that knows file formats: no h5py / pyarrow.parquet import and no
  torch.load / torch.save call in pipeline/, flows/, models/ or bench/;
* every package is used through its public modules and names: no module imports an underscore
  module or name of ANOTHER package (``storage._h5`` from pipeline/, ``flows._stages`` from
  models/, ``pipeline.text.parse._x`` from pipeline/datasets/ ...); a package's own modules may
  share private names, and tests/ may reach into anything;
* pipeline/ is pure stage code: no prefect import.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIBRARY = ("pipeline", "flows", "models", "storage", "bench")
FORMAT_MODULES = ("h5py", "pyarrow.parquet")
FORMAT_CALLS = {("torch", "load"), ("torch", "save")}


def _files(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (REPO / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def _module(path: Path) -> tuple[str, str]:
    """(dotted module name, dotted package it lives in) of a file under the repository."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute dotted target) of every import; ``from a import b`` gives 'a.b'."""
    _, package = _module(path)
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = package.split(".")
                pkg = pkg[:len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([node.module] if node.module else []))
            elif (path.parent / f"{base.split('.')[0]}.py").exists() and path.parent != REPO:
                base = f"{_module(path)[1]}.{base}"  # a script's sibling module (bench/ puts its folder on sys.path)
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return out


def _is_module_file(dotted: str) -> bool:
    return (REPO / Path(*dotted.split("."))).with_suffix(".py").is_file()


def _private_owner(target: str) -> str | None:
    """The package whose private module or name ``target`` reaches, or None when all public."""
    segs = target.split(".")
    for i, seg in enumerate(segs):
        if seg.startswith("_") and not seg.startswith("__"):
            owner = segs[:i]
            if owner and _is_module_file(".".join(owner)):
                owner = owner[:-1]  # a private NAME of a module: owned by the module's package
            return ".".join(owner)
    return None


def test_no_file_format_library_outside_storage():
    bad = []
    for path in _files("pipeline", "flows", "models", "bench"):
        rel = path.relative_to(REPO)
        for line, target in _imports(path):
            if any(target == m or target.startswith(m + ".") for m in FORMAT_MODULES):
                bad.append(f"{rel}:{line}: imports {target}")
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and (node.func.value.id, node.func.attr) in FORMAT_CALLS):
                bad.append(f"{rel}:{node.lineno}: calls {node.func.value.id}.{node.func.attr}")
    assert not bad, "file formats belong to storage/ (add a named function there):\n" + "\n".join(bad)


def test_no_private_import_across_packages():
    bad = []
    for path in _files(*LIBRARY):
        module, _ = _module(path)
        for line, target in _imports(path):
            owner = _private_owner(target)
            if owner is not None and not (module == owner or module.startswith(owner + ".")):
                bad.append(f"{path.relative_to(REPO)}:{line}: {target} (private to {owner or 'its file'})")
    assert not bad, "use (or make) a public name instead:\n" + "\n".join(bad)


def test_pipeline_does_not_import_prefect():
    bad = [f"{p.relative_to(REPO)}:{line}: {t}" for p in _files("pipeline") for line, t in _imports(p)
           if t == "prefect" or t.startswith("prefect.")]
    assert not bad, "pipeline/ is pure stage code; Prefect belongs in flows/:\n" + "\n".join(bad)


@pytest.mark.parametrize("target, owner", [
    ("storage._h5.atomic_h5", "storage"),
    ("storage.atomic.atomic_path", None),
    ("pipeline.text.parse._private_helper", "pipeline.text"),
    ("models.hgr._vocab", "models"),
])
def test_private_owner(target, owner):
    assert _private_owner(target) == owner


# models/ is a library (open_clip's / timm's sense): torch, numpy, pydantic and its own modules; no application
# config, no command line, no files of the application, no orchestration.
MODELS_MAY_NOT_IMPORT = ("pipeline", "flows", "storage", "prefect", "pyarrow", "h5py", "argparse")


def library_violations(paths: list[Path]) -> list[str]:
    """Imports of a forbidden package (lazy ones included) and ``__main__`` entry points in ``paths``."""
    bad = []
    for path in paths:
        rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        for node in ast.walk(ast.parse(path.read_text())):
            targets = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                       [f"{node.module}.{a.name}" for a in node.names]
                       if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad += [f"{rel}:{node.lineno}: imports {t}" for t in targets if t.split(".")[0] in MODELS_MAY_NOT_IMPORT]
            if (isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "__name__"
                    and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.comparators)):
                bad.append(f"{rel}:{node.lineno}: a command-line entry point")
    return bad


def test_models_is_a_library():
    bad = library_violations(_files("models"))
    assert not bad, ("models/ may import torch, numpy, pydantic and its own modules only (application config, "
                     "CLI and file I/O belong to pipeline/, flows/, storage/):\n" + "\n".join(bad))


def test_library_check_finds_planted_violations(tmp_path):
    (tmp_path / "m.py").write_text("import torch\n\ndef f():\n    from pipeline.learn.config import TrainConfig\n"
                                   "    import h5py\n    return TrainConfig\n\nif __name__ == '__main__':\n    f()\n")
    (tmp_path / "ok.py").write_text("import numpy as np\nfrom torch import nn\n")
    bad = library_violations([tmp_path / "m.py", tmp_path / "ok.py"])
    assert len(bad) == 3 and "pipeline.learn.config.TrainConfig" in bad[0] and "h5py" in bad[1]
    assert "entry point" in bad[2] and not any("ok.py" in b for b in bad)
