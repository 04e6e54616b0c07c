"""`vtr index`, `vtr search`, `vtr serve` (registered into the `vtr` CLI by ``register``).

  vtr index --checkpoint runs/hanet/demo/best.pt --dataset sample   build the search index (flow build-index)
  vtr search "a man rides a horse" [--top 10] [--k 100] [--exhaustive] [--json]
  vtr serve [--host 127.0.0.1] [--port 8765]                          the web page
"""
from __future__ import annotations

import argparse
import json
import sys

DEFAULT_INDEX = "runs/hanet/demo/index"


def _searcher(a: argparse.Namespace):
    from pipeline.search.query import Searcher

    return Searcher(a.index, checkpoint=a.checkpoint or None, shards_root=a.shards or None, device=a.device,
                    shortlist=a.shortlist)


def _cmd_index(a: argparse.Namespace) -> int:
    from pathlib import Path

    kwargs = dict(checkpoint=a.checkpoint, dataset=a.dataset, out_root=a.out_root, index_dir=a.index or "",
                  splits=a.splits, n_thumbs=a.thumbs, device=a.device, dataset_root=a.dataset_root)
    if a.no_flow:  # the same stage code without Prefect (no API server needed)
        from flows._feedback import progress
        from pipeline.search.index import build_index

        with progress(f"index {a.dataset}", "videos", prefect=False) as step:
            meta = build_index(a.checkpoint, Path(a.out_root) / a.dataset, a.index or None, splits=a.splits or None,
                               n_thumbs=a.thumbs, device=a.device, dataset_root=a.dataset_root or None, step=step)
        print(f"indexed {meta['n_videos']} videos ({meta['n_with_thumbnails']} with thumbnails) "
              f"into {meta['index_dir']}")
        return 0
    from flows.cli import prepare_flow_run
    from flows.index import build_index

    prepare_flow_run()
    build_index(**kwargs)
    return 0


def _cmd_search(a: argparse.Namespace) -> int:
    from pipeline.search.query import format_results
    from pipeline.search.encode import SearchError

    try:
        res = _searcher(a).search(a.query, top=a.top, k=a.k, exhaustive=a.exhaustive)
    except (SearchError, FileNotFoundError) as exc:
        if a.json:
            print(json.dumps({"error": str(exc)}))
        print(f"vtr search: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=2) if a.json else format_results(res))
    return 0


def _cmd_serve(a: argparse.Namespace) -> int:
    from pipeline.search.encode import SearchError
    from pipeline.search.web import serve

    try:
        s = _searcher(a)
    except (SearchError, FileNotFoundError) as exc:
        print(f"vtr serve: {exc}", file=sys.stderr)
        return 2
    serve(s, a.host, a.port, a.top)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", default=DEFAULT_INDEX, help="index folder (vtr index writes <run>/index)")
    p.add_argument("--checkpoint", default="", help="default: the one the index records (its sha256 is checked)")
    p.add_argument("--shards", default="", help="shard tree for the vocabulary; default: the one the index records")
    p.add_argument("--device", default="cpu")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--shortlist", default="auto", choices=["auto", "levels", "global", "concepts"],
                   help="stage-1 score: level-pooled (default), global embeddings only, or concept Jaccard")


def register(sub) -> None:
    """Add index / search / serve to the `vtr` sub-parsers."""
    p = sub.add_parser("index", help="build the search index of a dataset for a checkpoint (flow build-index)")
    p.add_argument("--checkpoint", default="runs/hanet/demo/best.pt")
    p.add_argument("--dataset", default="sample")
    p.add_argument("--out-root", default="out")
    p.add_argument("--index", default="", help="index folder; default <checkpoint folder>/index")
    p.add_argument("--splits", nargs="*", default=[], help="default: every split with features")
    p.add_argument("--thumbs", type=int, default=4, help="thumbnails per video (0 = none)")
    p.add_argument("--dataset-root", default="", help="source videos folder; default: the one ingest recorded")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-flow", action="store_true", help="run the stage directly, without Prefect")
    p.set_defaults(fn=_cmd_index)

    p = sub.add_parser("search", help="text -> video search over an index")
    p.add_argument("query")
    _common(p)
    p.add_argument("--k", type=int, default=100, help="shortlist size re-ranked by the full model")
    p.add_argument("--exhaustive", action="store_true", help="score every video with the full model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_cmd_search)

    p = sub.add_parser("serve", help="web page over an index (127.0.0.1 by default)")
    _common(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.set_defaults(fn=_cmd_serve)
