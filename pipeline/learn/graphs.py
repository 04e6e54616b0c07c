"""One caption's role graph -> the fixed slots the models read: a sentence root, up to max_verbs verbs and
max_nouns arguments, their word spans, roles and adjacency (the rules: pipeline/learn/dataset.py's docstring)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from models.batch import ROLE_IDS, ROOT_ROLE, role_id


VERB_ROLE = ROLE_IDS["V"]


def build_graph(nodes: Sequence[dict] | None, edges: Sequence[dict] | None, n_words: int,
                max_words: int, max_verbs: int, max_nouns: int, ok: bool = True,
                edges_mode: str = "improved"):
    """One caption's role graph -> (span masks (G, max_words) bool, roles (G,) int64,
    valid (G,) bool, adjacency (G, G) bool) with G = 1 + max_verbs + max_nouns.

    adjacency[i, j] = node i receives from node j. edges_mode (HANetConfig.graph_edges):
    'improved' = the module docstring's rules; 'reference' = Roc-Ng/HANet's reader
    (t2vretrieval/readers/rolegraphs.py): argument slots in node order, edges root->verb
    (the root receives nothing) and verb<->argument for table edges (src verb, dst argument),
    no self loops, an argument without a kept verb stays unconnected. (The reference
    row-normalises its matrix; the attention GCN only reads which entries are non-zero.)"""
    if edges_mode not in ("improved", "reference"):
        raise ValueError(f"edges_mode must be 'improved' or 'reference', got {edges_mode!r}")
    ref = edges_mode == "reference"
    g = 1 + max_verbs + max_nouns
    masks = np.zeros((g, max_words), dtype=bool)
    roles = np.zeros(g, dtype=np.int64)
    valid = np.zeros(g, dtype=bool)
    adj = np.zeros((g, g), dtype=bool)
    n_kept = max(1, min(int(n_words), max_words))
    masks[0, :n_kept] = True
    roles[0] = ROOT_ROLE
    valid[0] = True
    adj[0, 0] = not ref
    if not ok or not nodes:
        return masks, roles, valid, adj

    spans, verbs, args, edge_pairs = _graph_nodes(nodes, edges, n_kept, max_verbs, max_nouns, ref)
    slot: dict[int, int] = {}
    for k, i in enumerate(verbs):
        slot[i] = 1 + k
        roles[1 + k] = VERB_ROLE
    for k, i in enumerate(args):
        slot[i] = 1 + max_verbs + k
        roles[1 + max_verbs + k] = role_id(str(nodes[i].get("role", "NOUN")))
    for i, s in slot.items():
        masks[s, spans[i]] = True
        valid[s] = True
        adj[s, s] = not ref
    (_reference_edges if ref else _improved_edges)(adj, slot, verbs, args, edge_pairs)
    return masks, roles, valid, adj


def _graph_nodes(nodes: Sequence[dict], edges: Sequence[dict] | None, n_kept: int, max_verbs: int, max_nouns: int,
                 ref: bool) -> tuple[list[list[int]], list[int], list[int], list[tuple[int, int]]]:
    """(each node's kept word positions, the verb nodes kept, the argument nodes kept, the (src, dst) edges).

    Arguments attached to a kept verb come first unless ``ref`` (the reference keeps node order)."""
    spans = []
    for nd in nodes:
        sp = [int(i) for i in (nd.get("spans") or []) if 0 <= int(i) < n_kept]
        spans.append(sp)
    is_root = [str(nd.get("role", "")).upper() == "ROOT" for nd in nodes]
    verbs = [i for i, nd in enumerate(nodes) if nd.get("role") == "V" and spans[i] and not is_root[i]][:max_verbs]
    verb_set = set(verbs)
    edge_pairs = [(int(e["src"]), int(e["dst"])) for e in (edges or [])]
    attached = {d for s, d in edge_pairs if s in verb_set} | {s for s, d in edge_pairs if d in verb_set}
    args = [i for i, nd in enumerate(nodes)
            if nd.get("role") != "V" and spans[i] and not is_root[i]]
    args = (args if ref else sorted(args, key=lambda i: (i not in attached, i)))[:max_nouns]
    return spans, verbs, args, edge_pairs


def _reference_edges(adj: np.ndarray, slot: dict[int, int], verbs: list[int], args: list[int],
                     edge_pairs: list[tuple[int, int]]) -> None:
    """Roc-Ng/HANet's edges: root -> verb, verb <-> argument for table edges; nothing else."""
    verb_set = set(verbs)
    for i in verbs:
        adj[slot[i], 0] = True  # root -> verb: the verb receives from the root
    for s, d in edge_pairs:
        if s in verb_set and d in slot and d not in verb_set:
            adj[slot[s], slot[d]] = adj[slot[d], slot[s]] = True


def _improved_edges(adj: np.ndarray, slot: dict[int, int], verbs: list[int], args: list[int],
                    edge_pairs: list[tuple[int, int]]) -> None:
    """root <-> verb, verb <-> argument (either direction in the table), unattached arguments <-> root."""
    verb_set = set(verbs)
    for i in verbs:
        adj[0, slot[i]] = adj[slot[i], 0] = True
    linked = set()
    for s, d in edge_pairs:
        if s in slot and d in slot and s != d and ((s in verb_set) != (d in verb_set)):
            adj[slot[s], slot[d]] = adj[slot[d], slot[s]] = True
            linked.add(s if s not in verb_set else d)
    for i in args:
        if i not in linked:  # unattached argument: hang it off the sentence root
            adj[0, slot[i]] = adj[slot[i], 0] = True
