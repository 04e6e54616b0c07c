"""`vtr roles` (registered into the `vtr` CLI by ``register``): HGR's role-graph file without AllenNLP.

  vtr roles captions.txt --out annotation/RET/sent2rolegraph.augment.json [--spacy-model en_core_web_md]

Captions from .txt (one per line), .json (ref_captions.json, MSR-VTT, VATEX, lists) or .csv/.tsv;
the graphs come from the offline spaCy backend (pipeline/text/hgr_roles.py). `vtr export` and
`vtr compare-features` are flows (flows/export.py, flows/compare_features.py).
"""
from __future__ import annotations

import argparse
import json


def _cmd_roles(a: argparse.Namespace) -> int:
    from pipeline.config import TextConfig
    from pipeline.text.hgr_roles import run_roles

    report = run_roles(a.captions, a.out, TextConfig(spacy_model=a.spacy_model))
    c = report["counts"]
    print(f"{c['captions']} captions -> {report['out']}: {c['with_frames']} with verb frames, "
          f"{c['fallback']} fallback (noun chunks / verbs only), {c['no_graph']} without a graph "
          f"(ROOT only), {c['unaligned']} not aligned to whitespace words ({report['seconds']:.1f} s)")
    if a.json:
        print(json.dumps(report, indent=2))
    return 0


def register(sub) -> None:
    p = sub.add_parser("roles", help="write HGR's sent2rolegraph.augment.json from a captions file (spaCy, offline)")
    p.add_argument("captions", help="captions file: .txt (one per line), .json or .csv/.tsv")
    p.add_argument("--out", default="sent2rolegraph.augment.json", help="output JSON (default: %(default)s)")
    p.add_argument("--spacy-model", default="en_core_web_md", help="spaCy pipeline (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="also print the report as JSON")
    p.set_defaults(fn=_cmd_roles)
