"""Semantic role graphs from a spaCy dependency parse (backend ``spacy-dep``).

The references ran AllenNLP's BERT SRL, which cannot be installed or fetched
here (see docs of the text stages). This labeller maps dependency relations
onto the same 16-role set (:data:`ROLES`):

- every token with universal POS ``VERB`` heads a frame (auxiliaries and the
  copula 'is' are ``AUX`` and never do); its particles join the V node
  ("picks up");
- subject -> ARG0, passive subject / direct object -> ARG1, dative -> ARG2,
  passive agent ('by ...') -> ARG0, modal -> ARGM-MOD;
- prepositional phrases by preposition (:data:`PREP_ROLES`): in/on/at ... ->
  ARGM-LOC, to/into/toward/across/down/up/through ... -> ARGM-DIR,
  during/before/after/while ... -> ARGM-TMP. 'with' -> ARGM-COM when its object
  is a person or animal (WordNet's first sense, or a personal pronoun: "talks
  with a friend"), else ARGM-MNR (instrument/manner: "cuts bread with a knife");
- adverbs -> ARGM-MNR, except time / direction / place adverbs (lists below);
- clauses: a 'to'-infinitive or 'in order to' clause -> ARGM-PRP ("folds
  paper to make a plane"), except after control verbs ("tries to climb") and
  wh-infinitives ("explains how to cook"), which are ARG1 as in PropBank;
  bare xcomp / ccomp -> ARG1; adverbial clauses with while/when/after/... ->
  ARGM-TMP; other adverbial clauses -> ARGM-ADV; predicative complements ->
  ARGM-PRD;
- a verb without its own subject inherits one: from the verb it is
  coordinated with or depends on (conj, xcomp, advcl, a clause inside a PP),
  or from the noun a participle or relative clause modifies ("a dog running
  in the park" -> run: ARG0 [a dog]); relative pronouns are replaced by that
  noun phrase. The inherited subject is ARG1 when the verb is passive.

Argument spans are the dependency subtree of the argument's head (edge
punctuation trimmed). Known weak spots, inherited from the parser: PP
attachment ("plays a guitar on stage" puts the PP inside ARG1), frames lost
when a verb is tagged as a noun ("a chef slices onions"), ditransitives.

Graph structure (the reference's): nodes (role, token spans, words), edges
(verb node, argument node, role), nodes de-duplicated by (spans, role) so an
argument can hang off several verbs; only frames with a V and at least one
argument are kept. The sentence root is implicit (all tokens) and not stored.
When no frame survives, the reference's fallback applies: noun chunks (or,
without any, NN* tokens) become NOUN nodes and VB* tokens V nodes, no edges.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

ROLES = ("V", "ARG0", "ARG1", "ARG2", "ARG3", "ARG4", "ARGM-LOC", "ARGM-MNR", "ARGM-TMP",
         "ARGM-DIR", "ARGM-ADV", "ARGM-PRP", "ARGM-PRD", "ARGM-COM", "ARGM-MOD", "NOUN")

LOC_PREPS = ("in", "on", "at", "near", "inside", "outside", "under", "underneath", "beneath",
             "above", "below", "behind", "beside", "between", "among", "amongst", "within",
             "upon", "atop", "against", "next", "by", "throughout", "amid")
DIR_PREPS = ("to", "into", "onto", "toward", "towards", "across", "down", "up", "through",
             "along", "around", "over", "past", "from", "out", "off", "away", "via", "round")
TMP_PREPS = ("during", "before", "after", "while", "until", "till", "since")
PREP_ROLES: dict[str, str] = {
    **{p: "ARGM-LOC" for p in LOC_PREPS},
    **{p: "ARGM-DIR" for p in DIR_PREPS},
    **{p: "ARGM-TMP" for p in TMP_PREPS},
    "for": "ARGM-PRP", "about": "ARG1", "of": "ARG1", "like": "ARGM-MNR",
    "without": "ARGM-MNR", "as": "ARGM-PRD",
}
DEFAULT_PREP_ROLE = "ARGM-ADV"

TMP_ADVERBS = frozenset({"then", "now", "again", "later", "soon", "still", "already", "first",
                         "finally", "today", "tonight", "yesterday", "tomorrow", "always", "never",
                         "often", "sometimes", "once", "twice", "afterwards", "before", "after",
                         "currently", "meanwhile", "eventually", "repeatedly", "constantly"})
DIR_ADVERBS = frozenset({"up", "down", "away", "back", "out", "off", "around", "over", "forward",
                         "forwards", "backward", "backwards", "home", "upstairs", "downstairs",
                         "along", "across", "through", "in", "aside", "apart", "together", "onward"})
LOC_ADVERBS = frozenset({"here", "there", "nearby", "somewhere", "everywhere", "anywhere",
                         "outside", "inside", "outdoors", "indoors", "next", "close", "behind",
                         "ahead", "abroad", "underwater", "onstage", "offstage", "overhead"})
NEGATIONS = frozenset({"not", "n't", "never", "no"})
TMP_MARKERS = frozenset({"while", "when", "whenever", "as", "after", "before", "until", "till",
                         "since", "once"})
# verbs whose 'to'-infinitive is their object (ARG1), not a purpose
CONTROL_VERBS = frozenset({"want", "try", "begin", "start", "continue", "like", "love", "hate",
                           "need", "attempt", "learn", "decide", "prepare", "seem", "appear",
                           "fail", "manage", "refuse", "hope", "plan", "tend", "go", "get",
                           "have", "teach", "show", "tell", "ask", "help", "allow", "wish",
                           "struggle", "offer", "agree", "promise", "expect", "choose", "pretend"})

SUBJECT_DEPS = ("nsubj", "nsubjpass", "csubj", "csubjpass", "expl")
NOUN_POS = ("NOUN", "PROPN", "PRON", "NUM")
VERBAL_POS = ("VERB", "AUX")
RELATIVE_TAGS = ("WDT", "WP", "WP$")
DIRECT_ROLES = {"nsubj": "ARG0", "csubj": "ARG0", "nsubjpass": "ARG1", "csubjpass": "ARG1",
                "dobj": "ARG1", "obj": "ARG1", "dative": "ARG2", "agent": "ARG0", "attr": "ARG2",
                "oprd": "ARGM-PRD", "acomp": "ARGM-PRD", "npadvmod": "ARGM-ADV", "ccomp": "ARG1"}


class Lexicon(Protocol):
    """What the labeller needs to know about words (implemented by lemmas.WordNetLemmas)."""

    def lemma_for_tag(self, word: str, tag: str) -> str: ...

    def is_animate(self, word: str, tag: str) -> bool: ...


@dataclass(frozen=True)
class Node:
    role: str
    spans: tuple[int, ...]
    words: str


@dataclass
class RoleGraph:
    """Nodes index into ``tokens``; edges are (verb node, argument node, role)."""

    tokens: list[str]
    nodes: list[Node] = field(default_factory=list)
    edges: list[tuple[int, int, str]] = field(default_factory=list)
    fallback: bool = False

    def node_rows(self) -> list[dict[str, Any]]:
        return [{"role": n.role, "spans": list(n.spans), "words": n.words} for n in self.nodes]

    def edge_rows(self) -> list[dict[str, Any]]:
        return [{"src": s, "dst": d, "role": r} for s, d, r in self.edges]

    def frames(self) -> dict[str, list[tuple[str, str]]]:
        """{verb words: [(role, argument words), ...]}: a readable view for tests and logs."""
        out: dict[str, list[tuple[str, str]]] = {}
        for src, dst, role in self.edges:
            out.setdefault(self.nodes[src].words, []).append((role, self.nodes[dst].words))
        return out


def normalize_role(role: str) -> str:
    """C-/R- prefixed roles map to their base role; roles outside :data:`ROLES` to NOUN."""
    for prefix in ("C-", "R-"):
        if role.startswith(prefix):
            role = role[len(prefix):]
    return role if role in ROLES else "NOUN"


class GraphBuilder:
    """Adds frames/nodes to a RoleGraph, de-duplicating nodes by (spans, role)."""

    def __init__(self, tokens: list[str]):
        self.graph = RoleGraph(tokens=list(tokens))
        self._index: dict[tuple[tuple[int, ...], str], int] = {}

    def node(self, role: str, spans: Iterable[int]) -> int:
        key = (tuple(spans), role)
        if key not in self._index:
            words = " ".join(self.graph.tokens[i] for i in key[0])
            self._index[key] = len(self.graph.nodes)
            self.graph.nodes.append(Node(role, key[0], words))
        return self._index[key]

    def frame(self, verb_spans: list[int], args: list[tuple[str, list[int]]]) -> bool:
        """Add a frame when it has at least one argument; returns whether it was added."""
        args = [(role, spans) for role, spans in args if spans]
        if not verb_spans or not args:
            return False
        verb = self.node("V", verb_spans)
        for role, spans in sorted(args, key=lambda a: (a[1][0], a[0])):
            edge = (verb, self.node(role, spans), role)
            if edge not in self.graph.edges:
                self.graph.edges.append(edge)
        return True


# --- spans -------------------------------------------------------------------

def _trim(indices: list[int], doc: Any) -> list[int]:
    while indices and doc[indices[0]].is_punct:
        indices = indices[1:]
    while indices and doc[indices[-1]].is_punct:
        indices = indices[:-1]
    return indices


def subtree_span(tok: Any, exclude: Any = None) -> list[int]:
    """Sorted indices of ``tok``'s subtree, minus ``exclude``'s subtree, edge punctuation trimmed."""
    skip = {t.i for t in exclude.subtree} if exclude is not None else set()
    return _trim(sorted(t.i for t in tok.subtree if t.i not in skip), tok.doc)


def verb_span(verb: Any) -> list[int]:
    return sorted([verb.i] + [c.i for c in verb.children if c.dep_ == "prt"])


# --- verbs and subjects ------------------------------------------------------

def is_frame_verb(tok: Any) -> bool:
    return tok.pos_ == "VERB" and tok.dep_ not in ("aux", "auxpass")


def is_passive(verb: Any) -> bool:
    if any(c.dep_ in ("auxpass", "nsubjpass", "csubjpass") for c in verb.children):
        return True
    if verb.tag_ == "VBN" and verb.dep_ == "acl":
        return True
    # a participle coordinated with a passive verb shares its auxiliaries ("was broken and
    # dropped"); the tagger often reads it as VBD
    shared = verb.dep_ == "conj" and own_subject(verb) is None and verb.head.i != verb.i
    return shared and verb.tag_ in ("VBN", "VBD") and is_passive(verb.head)


def is_relative(tok: Any) -> bool:
    return tok.tag_ in RELATIVE_TAGS or (tok.lower_ == "that" and tok.head.dep_ == "relcl")


def antecedent_span(clause: Any) -> list[int]:
    """The noun phrase a relative/participle clause modifies, without the clause."""
    return subtree_span(clause.head, exclude=clause)


def resolve(arg: Any, verb: Any) -> list[int]:
    """Span of an argument; a relative pronoun stands for the modified noun phrase."""
    if is_relative(arg) and verb.dep_ == "relcl" and verb.head.pos_ in NOUN_POS:
        return antecedent_span(verb)
    return subtree_span(arg)


def own_subject(verb: Any) -> Any:
    return next((c for c in verb.children if c.dep_ in SUBJECT_DEPS and c.dep_ != "expl"), None)


def subject_source(verb: Any, depth: int = 0) -> list[int]:
    """Span of the entity that is ``verb``'s subject, its own or inherited (may be empty)."""
    subj = own_subject(verb)
    if subj is not None:
        return resolve(subj, verb)
    head = verb.head
    if head.i == verb.i or depth > len(verb.doc):
        return []
    if verb.dep_ in ("conj", "xcomp", "advcl") and head.pos_ in VERBAL_POS:
        return subject_source(head, depth + 1)
    if verb.dep_ == "pcomp" and head.dep_ == "prep" and head.head.pos_ in VERBAL_POS:
        return subject_source(head.head, depth + 1)
    if verb.dep_ in ("acl", "relcl") and head.pos_ in NOUN_POS:
        return antecedent_span(verb) if not _is_infinitive(verb) else []
    return []


def inherited_subject(verb: Any) -> tuple[str, list[int]] | None:
    """(role, span) of the subject a verb without its own inherits, or None."""
    if own_subject(verb) is not None:
        return None
    if verb.dep_ == "relcl" and any(is_relative(c) for c in verb.children):
        return None
    span = subject_source(verb)
    if not span:
        return None
    return ("ARG1" if is_passive(verb) else "ARG0"), span


# --- argument roles ----------------------------------------------------------

def _is_infinitive(clause: Any) -> bool:
    return any(c.dep_ == "aux" and c.tag_ == "TO" for c in clause.children)


def _marker(clause: Any) -> str | None:
    mark = next((c for c in clause.children if c.dep_ == "mark"), None)
    return mark.lower_ if mark is not None else None


def _has_wh(clause: Any) -> bool:
    return any(c.tag_ in ("WRB", "WP", "WDT") for c in clause.children)


def clause_role(clause: Any, verb: Any, lexicon: Lexicon) -> str:
    """Role of a clausal argument (xcomp / advcl) of ``verb``."""
    if _is_infinitive(clause) or _marker(clause) in ("in", "so"):
        control = lexicon.lemma_for_tag(verb.text, verb.tag_) in CONTROL_VERBS
        return "ARG1" if (clause.dep_ == "xcomp" and control) or _has_wh(clause) else "ARGM-PRP"
    if clause.dep_ == "xcomp":
        return "ARG1"
    return "ARGM-TMP" if _marker(clause) in TMP_MARKERS else "ARGM-ADV"


def _object_of(prep: Any) -> Any:
    return next((c for c in prep.children if c.dep_ in ("pobj", "pcomp")), None)


def prep_role(prep: Any, verb: Any, lexicon: Lexicon) -> str | None:
    """Role of a prepositional phrase by its preposition; bare particles act as adverbs."""
    obj = _object_of(prep)
    word = prep.lower_
    if obj is None:
        return adverb_role(prep) if not list(prep.children) else PREP_ROLES.get(word, DEFAULT_PREP_ROLE)
    if word == "by":
        return "ARG0" if is_passive(verb) else "ARGM-LOC"
    if word == "with":
        return "ARGM-COM" if lexicon.is_animate(obj.text, obj.tag_) else "ARGM-MNR"
    return PREP_ROLES.get(word, DEFAULT_PREP_ROLE)


def adverb_role(adv: Any) -> str | None:
    """Time / direction / place adverbs by word; other adverbs are manner; negation is dropped."""
    word = adv.lower_
    if adv.tag_ == "WRB" or word in NEGATIONS:
        return None
    if word in TMP_ADVERBS:
        return "ARGM-TMP"
    if word in DIR_ADVERBS:
        return "ARGM-DIR"
    return "ARGM-LOC" if word in LOC_ADVERBS else "ARGM-MNR"


def child_role(child: Any, verb: Any, lexicon: Lexicon) -> str | None:
    """Role of a dependent of ``verb``, or None when it is not an argument."""
    dep = child.dep_
    if dep == "aux" and child.tag_ == "MD":
        return "ARGM-MOD"
    if dep in DIRECT_ROLES:
        return DIRECT_ROLES[dep]
    if dep == "prep":
        return prep_role(child, verb, lexicon)
    if dep == "advmod":
        return adverb_role(child)
    if dep in ("xcomp", "advcl"):
        return clause_role(child, verb, lexicon)
    return None


def arg_span(child: Any, verb: Any, role: str) -> list[int]:
    if role == "ARGM-MOD":
        return [child.i]
    return resolve(child, verb)


def frame_args(verb: Any, lexicon: Lexicon) -> list[tuple[str, list[int]]]:
    """(role, span) of every argument of ``verb``, inherited subject included."""
    args = []
    for child in verb.children:
        role = child_role(child, verb, lexicon)
        if role is not None:
            args.append((role, arg_span(child, verb, role)))
    inherited = inherited_subject(verb)
    if inherited is not None:
        args.append(inherited)
    return args


# --- graphs ------------------------------------------------------------------

def fallback_graph(builder: GraphBuilder, doc: Any) -> None:
    """The reference's no-frame fallback: noun chunks (else NN* tokens) as NOUN, VB* as V."""
    chunks = [list(range(c.start, c.end)) for c in doc.noun_chunks]
    if not chunks:
        chunks = [[t.i] for t in doc if t.tag_.startswith("NN")]
    for spans in chunks:
        builder.node("NOUN", spans)
    for tok in doc:
        if tok.tag_.startswith("VB"):
            builder.node("V", [tok.i])
    builder.graph.fallback = True


def graph_from_doc(doc: Any, lexicon: Lexicon) -> RoleGraph:
    """Role graph of a parsed caption; ``doc`` tokens are the graph's tokens."""
    builder = GraphBuilder([t.text for t in doc])
    for tok in doc:
        if is_frame_verb(tok):
            builder.frame(verb_span(tok), frame_args(tok, lexicon))
    if not builder.graph.edges:
        fallback_graph(builder, doc)
    return builder.graph

