"""Command-line options of the Roc-Ng/HANet checkpoint import (no torch import: `vtr --help` stays fast).

Shared by ``python -m models.import_reference`` and ``vtr import-checkpoint``.
"""
from __future__ import annotations

import argparse


def add_vocab_arguments(ap: argparse.ArgumentParser) -> None:
    """--vocab / --shards / --verb-concepts / --noun-concepts / --fidelity."""
    ap.add_argument("--vocab", default=None, help="the reference's int2word.npy or word2int.json")
    ap.add_argument("--shards", default=None, help="shard tree to remap the vocabularies onto")
    ap.add_argument("--verb-concepts", default=None, help="the reference's verb concepts in id order")
    ap.add_argument("--noun-concepts", default=None, help="the reference's noun concepts in id order")
    ap.add_argument("--fidelity", default="reference", choices=["reference", "improved"],
                    help="HANetConfig.fidelity recorded in the checkpoint (default: reference)")


def vocab_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of models.import_reference.import_reference_checkpoint."""
    return {"vocab": args.vocab, "shards": args.shards, "verb_concepts": args.verb_concepts,
            "noun_concepts": args.noun_concepts, "fidelity": args.fidelity}
