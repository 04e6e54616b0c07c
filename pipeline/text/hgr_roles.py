"""`vtr roles`: HGR's ``sent2rolegraph.augment.json`` from any captions file, without AllenNLP.

HGR/HANet build their role graphs with an AllenNLP SRL model that no longer installs (or tags
everything 'O'). This writes the same file from the project's offline spaCy role-graph backend
(``spacy-dep``, pipeline/text/roles.py), so the authors' code can train on a new dataset.

The reference reader splits each caption on whitespace, looks words up in word2int.json, and
its node spans index those whitespace words. So the output is keyed by the caption text exactly
as given (what ``ref_captions.json`` holds), ROOT's words are ``caption.split()``, and every
node's spaCy token indices are mapped onto the whitespace words that hold them ("dog." is one
word for the reader and one node span). Formats read: .txt (one caption per line), .json
(``{video: [captions]}`` as ref_captions.json, a list of strings, MSR-VTT's ``sentences``,
VATEX's ``enCap`` lists, records with ``caption``/``captions``), .csv/.tsv (column ``caption``
or ``captions`` (a JSON list), else the first column).
"""
from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any

from pipeline.config import TextConfig
from storage import bundle_write as bw


class CaptionsFileError(ValueError):
    """A captions file that cannot be read as captions."""


def _from_json(data: Any) -> list[str]:
    if isinstance(data, dict) and isinstance(data.get("sentences"), list):       # MSR-VTT official
        return [str(s["caption"]) for s in data["sentences"] if isinstance(s, dict) and "caption" in s]
    if isinstance(data, dict):                                                   # ref_captions.json
        return [str(c) for caps in data.values() for c in (caps if isinstance(caps, list) else [caps])]
    if isinstance(data, list):
        out: list[str] = []
        for item in data:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, dict):
                value = next((item[k] for k in ("caption", "captions", "enCap", "sentence") if k in item), None)
                out += [str(c) for c in value] if isinstance(value, list) else [str(value)] if value else []
        return out
    raise CaptionsFileError("JSON must be {video: [captions]}, a list of captions or records with 'caption'")


def _from_csv(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0]]
    for name in ("caption", "captions"):
        if name in header:
            col = header.index(name)
            out: list[str] = []
            for r in rows[1:]:
                cell = r[col] if col < len(r) else ""
                if name == "captions" and cell.strip().startswith("["):
                    out += [str(c) for c in json.loads(cell)]
                elif cell.strip():
                    out.append(cell)
            return out
    return [r[0] for r in rows if r and r[0].strip()]


def read_captions_file(path: str | os.PathLike) -> list[str]:
    """Every caption of a .txt / .json / .csv / .tsv file, de-duplicated, in first-seen order."""
    path = Path(path)
    if not path.is_file():
        raise CaptionsFileError(f"{path}: no such captions file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            caps = _from_json(json.loads(path.read_text(encoding="utf-8")))
        elif suffix in (".csv", ".tsv"):
            caps = _from_csv(path)
        else:
            caps = [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines()]
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error, KeyError, TypeError) as exc:
        raise CaptionsFileError(f"{path}: cannot read captions: {exc}") from exc
    caps = [c for c in dict.fromkeys(caps) if c.strip()]
    if not caps:
        raise CaptionsFileError(f"{path}: no captions found")
    return caps


def word_index(text: str, tokens: list[str]) -> list[int] | None:
    """For each token of ``text`` (in order), the index of the whitespace word holding its first
    character; None when a token cannot be found in ``text``."""
    starts, pos = [], 0
    for w in text.split():
        pos = text.index(w, pos)
        starts.append(pos)
        pos += len(w)
    out, cursor, wi = [], 0, 0
    for tok in tokens:
        at = text.find(tok, cursor)
        if at < 0:
            return None
        while wi + 1 < len(starts) and starts[wi + 1] <= at:
            wi += 1
        out.append(wi)
        cursor = at + len(tok)
    return out


def hgr_value(caption: str, parsed: Any) -> tuple[list, bool]:
    """(HGR [nodes, edges] keyed to ``caption.split()``, whether spans were aligned)."""
    words = caption.split()
    g = parsed.graph
    where = word_index(" ".join(words), parsed.tokens) if g is not None else None
    if g is None or where is None:
        return bw.hgr_graph(words, [], []), g is None
    nodes = [{"role": n.role, "spans": sorted({where[i] for i in n.spans})} for n in g.nodes]
    edges = [{"src": s, "dst": d, "role": r} for s, d, r in g.edges]
    return bw.hgr_graph(words, nodes, edges), True


def run_roles(captions_file: str | os.PathLike, out: str | os.PathLike, cfg: TextConfig | None = None) -> dict[str, Any]:
    """Parse every caption of ``captions_file`` with the spacy-dep backend; write HGR's JSON to ``out``."""
    from pipeline.text.parse import parse_captions

    t0 = time.perf_counter()
    cfg = (cfg or TextConfig()).model_copy(update={"backend": "spacy-dep"})
    caps = read_captions_file(captions_file)
    parsed = parse_captions(caps, cfg)
    graphs, counts = {}, {"captions": len(caps), "with_frames": 0, "fallback": 0, "no_graph": 0, "unaligned": 0}
    for cap, p in zip(caps, parsed):
        value, aligned = hgr_value(cap, p)
        graphs[cap] = value
        counts["unaligned"] += not aligned
        if p.graph is None:
            counts["no_graph"] += 1
        elif p.graph.fallback:
            counts["fallback"] += 1
        else:
            counts["with_frames"] += 1
    bw.write_json(out, graphs)
    return {"out": str(out), "counts": counts, "spacy_model": cfg.spacy_model,
            "seconds": round(time.perf_counter() - t0, 3)}
