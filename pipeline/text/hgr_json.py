"""Backend ``hgr-json``: role graphs imported from HGR's ``sent2rolegraph.augment.json``.

HGR (cshizhe/hgr_v2t) ran AllenNLP SRL once and saved, per caption text,
``[graph_nodes, graph_edges]``:

- ``graph_nodes``: ``{node_id: {"role": ..., "spans": [token indices],
  "words": [...]}}`` with node ids "ROOT", "1", "2", ... in insertion order;
  "ROOT" holds the whole sentence (``words`` = the token list the spans index
  into; HGR's SRL tokens, which equal spaCy's tokenization of the caption);
- ``graph_edges``: ``[[verb_node_id, arg_node_id, role], ...]``;
- "augment": captions without any SRL frame got the no-frame fallback (noun
  chunks as NOUN, VB* tokens as V) and have no edges.

Import rules: the ROOT node is dropped (our root is implicit: all tokens) and
its words become the tokens (whitespace tokens of the sentence when there is
no ROOT); roles are normalized to the 16-role set (C-/R- prefixes stripped,
others such as ARGM-NEG or ARGM-GOL -> NOUN, as HGR's reader does); node
order is kept; a graph without edges is flagged ``fallback``. Captions are
looked up by their exact text, then by the cleaned, lowercased text; a caption
that is not in the file gets status 'error' ("not in hgr json").
"""
from __future__ import annotations

import os
from typing import Any, Callable

from pipeline.text.roles import Node, RoleGraph, normalize_role
from storage.text import read_hgr_json

NOT_FOUND = "not in hgr json"
ROOT_ROLE = "ROOT"


class HgrGraphs:
    """Caption text -> HGR graph lookup over one JSON file."""

    def __init__(self, data: dict[str, Any], normalize: Callable[[str], str]):
        self.normalize = normalize
        self.exact = data
        self.loose: dict[str, str] = {}
        for sentence in data:
            self.loose.setdefault(normalize(sentence), sentence)

    @classmethod
    def load(cls, path: str | os.PathLike, normalize: Callable[[str], str]) -> "HgrGraphs":
        return cls(read_hgr_json(path), normalize)

    def find(self, caption: str) -> tuple[str, Any] | None:
        """(sentence key, raw graph) for a caption, or None when absent."""
        if caption in self.exact:
            return caption, self.exact[caption]
        key = self.loose.get(self.normalize(caption))
        return (key, self.exact[key]) if key is not None else None

    def __len__(self) -> int:
        return len(self.exact)


def _words(value: Any) -> list[str]:
    return [str(w) for w in value] if isinstance(value, list) else str(value).split()


def hgr_tokens(sentence: str, raw: Any) -> list[str]:
    """The token list HGR's spans index into: ROOT's words, else whitespace tokens."""
    nodes = raw[0] if isinstance(raw, (list, tuple)) and raw else {}
    root = nodes.get(ROOT_ROLE) if isinstance(nodes, dict) else None
    return _words(root["words"]) if root and "words" in root else sentence.split()


def _spans(node: dict[str, Any], n_tokens: int) -> tuple[int, ...]:
    spans = tuple(int(i) for i in node.get("spans", []))
    if not spans or min(spans) < 0 or max(spans) >= n_tokens:
        raise ValueError(f"node spans {list(spans)} outside the {n_tokens} tokens")
    return spans


def convert(raw: Any, tokens: list[str]) -> RoleGraph:
    """Our RoleGraph from one HGR ``[graph_nodes, graph_edges]`` value (ValueError if malformed)."""
    if not (isinstance(raw, (list, tuple)) and len(raw) == 2 and isinstance(raw[0], dict)):
        raise ValueError("expected [graph_nodes, graph_edges]")
    graph = RoleGraph(tokens=list(tokens))
    ids: dict[str, int] = {}
    for node_id, node in raw[0].items():
        if node.get("role") == ROOT_ROLE:
            continue
        spans = _spans(node, len(tokens))
        ids[str(node_id)] = len(graph.nodes)
        graph.nodes.append(Node(normalize_role(str(node["role"])), spans, " ".join(tokens[i] for i in spans)))
    for edge in raw[1]:
        src, dst, role = str(edge[0]), str(edge[1]), str(edge[2])
        if src not in ids or dst not in ids:
            raise ValueError(f"edge {edge} names an unknown node")
        graph.edges.append((ids[src], ids[dst], normalize_role(role)))
    graph.fallback = not graph.edges
    return graph
