"""WordNet lemmatization (NLTK's WordNetLemmatizer over WordNet 3.0), with its known errors fixed.

NLTK's ``WordNetLemmatizer.lemmatize`` returns the SHORTEST of the forms its
morphy step finds (nltk issues #2567, #3227), so 'men' stays 'men' (the
exception list's 'man' ties on length and loses to the word itself), 'riding'
becomes 'rid' and 'shines' (verb) becomes 'shin'. The fixed lemmatizer:

1. consults WordNet's exception list for the part of speech first
   (noun.exc: men -> man, verb.exc: saw -> see) and uses its base forms;
2. otherwise takes morphy's rule candidates and picks the one with the
   highest WordNet sense count (the tagged-corpus frequencies of cntlist.rev,
   ``Lemma.count()``, summed over the lemma's senses): ride 88 > rid 5,
   shine 25 > shin 0;
3. breaks count ties in favour of the word itself (plural-only nouns such as
   'pants'), then the shortest form (NLTK's rule).

``fix=False`` gives NLTK's lemmatizer unchanged (the reference's behaviour).
Words WordNet does not know are returned lowercased.
"""
from __future__ import annotations

from typing import Any

from pipeline.text import resources

# first letter of a Penn Treebank tag -> WordNet part of speech
PENN_TO_WORDNET = {"N": "n", "V": "v", "J": "a", "R": "r"}
# lexicographer files of nouns that can be a companion ("talking WITH a friend")
ANIMATE_LEXNAMES = frozenset({"noun.person", "noun.animal"})
PERSONAL_PRONOUNS = frozenset({"him", "her", "them", "me", "us", "you", "himself", "herself",
                               "themselves", "each", "other", "someone", "somebody", "everyone"})


def wordnet_pos(tag: str) -> str | None:
    """WordNet part of speech ('n', 'v', 'a', 'r') of a Penn Treebank tag, or None."""
    return PENN_TO_WORDNET.get(tag[:1]) if tag else None


class WordNetLemmas:
    """Cached lemmatizer and noun classifier over NLTK's WordNet (see module doc)."""

    def __init__(self, fix: bool = True, wn: Any = None):
        self.fix = fix
        self.wn = wn if wn is not None else resources.wordnet()
        self._cache: dict[tuple[str, str], str] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._plain = None

    def lemma(self, word: str, pos: str) -> str:
        """Lemma of ``word`` (lowercased) as part of speech ``pos`` ('n', 'v', 'a', 'r')."""
        key = (word.lower(), pos)
        if key not in self._cache:
            self._cache[key] = self._fixed(*key) if self.fix else self._nltk(*key)
        return self._cache[key]

    def lemma_for_tag(self, word: str, tag: str) -> str:
        """Lemma for a Penn tag; words of other classes are returned lowercased."""
        pos = wordnet_pos(tag)
        return self.lemma(word, pos) if pos else word.lower()

    def sense_count(self, name: str, pos: str) -> int:
        """Tagged-corpus frequency of ``name`` as ``pos``, summed over its senses."""
        key = (name, pos)
        if key not in self._counts:
            self._counts[key] = sum(lemma.count() for lemma in self.wn.lemmas(name, pos))
        return self._counts[key]

    def is_animate(self, word: str, tag: str) -> bool:
        """Person/animal noun (first WordNet sense) or a personal pronoun."""
        low = word.lower()
        if low in PERSONAL_PRONOUNS:
            return True
        if not tag.startswith("NN"):
            return False
        synsets = self.wn.synsets(self.lemma(low, "n"), "n")
        return bool(synsets) and synsets[0].lexname() in ANIMATE_LEXNAMES

    def _nltk(self, word: str, pos: str) -> str:
        if self._plain is None:
            from nltk.stem import WordNetLemmatizer

            self._plain = WordNetLemmatizer()
        return self._plain.lemmatize(word, pos)

    def _fixed(self, word: str, pos: str) -> str:
        bases = self.wn._exception_map[pos].get(word, [])
        known = [b for b in bases if self.wn.lemmas(b, pos)]
        if known:
            return self._best(word, known, pos)
        candidates = self.wn._morphy(word, pos, check_exceptions=False)
        return self._best(word, candidates, pos) if candidates else word

    def _best(self, word: str, candidates: list[str], pos: str) -> str:
        def rank(form: str) -> tuple[int, int, int]:
            return (-self.sense_count(form, pos), form != word, len(form))

        return min(candidates, key=rank)
