"""WordNet lemmatizer fixes, the offline WordNet set-up and resource errors.

Needs WordNet (scripts/setup_wordnet.sh); when missing these tests FAIL with
the set-up command.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.text import resources
from pipeline.text.lemmas import WordNetLemmas, wordnet_pos

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fixed():
    return WordNetLemmas(fix=True)


@pytest.fixture(scope="module")
def plain():
    return WordNetLemmas(fix=False)


def test_wordnet_is_version_3_0():
    wn = resources.wordnet()
    assert wn.get_version() == "3.0"
    assert wn.synsets("dog")[0].lexname() == "noun.animal"  # needs the lexnames file


@pytest.mark.parametrize("word,pos,want", [
    ("men", "n", "man"),        # exception list first (noun.exc)
    ("riding", "v", "ride"),    # sense counts: ride 88 > rid 5
    ("shines", "v", "shine"),   # shine 25 > shin 0
    ("saw", "v", "see"),        # verb.exc
    ("glasses", "n", "glass"),
    ("pants", "n", "pants"),    # count tie: keep the word itself
    ("dogs", "n", "dog"),
    ("xyzzies", "n", "xyzzies"),  # unknown to WordNet: unchanged
])
def test_fixed_lemmatizer(fixed, word, pos, want):
    assert fixed.lemma(word, pos) == want


@pytest.mark.parametrize("word,pos,nltk_says", [
    ("men", "n", "men"), ("riding", "v", "rid"), ("shines", "v", "shin")])
def test_plain_nltk_lemmatizer_has_the_known_errors(plain, word, pos, nltk_says):
    assert plain.lemma(word, pos) == nltk_says


def test_lemma_for_tag_uses_penn_tags_and_lowercases(fixed):
    assert fixed.lemma_for_tag("Riding", "VBG") == "ride"
    assert fixed.lemma_for_tag("Men", "NNS") == "man"
    assert fixed.lemma_for_tag("The", "DT") == "the"
    assert wordnet_pos("JJR") == "a" and wordnet_pos("RB") == "r" and wordnet_pos(".") is None


def test_animate_nouns(fixed):
    assert fixed.is_animate("friends", "NNS")
    assert fixed.is_animate("dog", "NN")
    assert fixed.is_animate("him", "PRP")
    assert not fixed.is_animate("knife", "NN")


def test_stopwords_are_nltks_179():
    stop = resources.stopwords_en()
    assert len(stop) == 179
    assert {"the", "is", "doing", "wouldn't"} <= stop
    assert not {"show", "make", "put", "take", "move", "go", "front", "two"} & stop


def test_setup_script_is_idempotent(tmp_path):
    script = REPO / "scripts" / "setup_wordnet.sh"
    first = subprocess.run(["bash", str(script), str(tmp_path)], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    second = subprocess.run(["bash", str(script), str(tmp_path)], capture_output=True, text=True)
    assert "0 file(s) copied" in second.stdout and "lexnames already up to date" in second.stdout
    wordnet = tmp_path / "corpora" / "wordnet"
    assert len((wordnet / "lexnames").read_text().splitlines()) == 45
    assert not (wordnet / "data.noun").is_symlink()


def test_missing_wordnet_says_how_to_set_it_up(tmp_path):
    code = ("import nltk; nltk.data.path[:] = []; "  # ignore ~/nltk_data etc. on a dev machine
            "import pipeline.text.resources as n; from pathlib import Path; "
            f"n.DEFAULT_NLTK_DIR = Path({str(tmp_path)!r}); n.wordnet()")
    env = {**os.environ, "NLTK_DATA": str(tmp_path), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode != 0
    assert "ResourceMissing" in proc.stderr and "setup_wordnet.sh" in proc.stderr
    assert "nltk.download('wordnet')" in proc.stderr


def test_missing_spacy_model_says_how_to_install_it():
    with pytest.raises(resources.ResourceMissing, match="requirements/text-models.txt"):
        resources.load_spacy("en_core_web_nonexistent")
