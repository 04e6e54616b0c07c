"""`vtr` command line: the same flows and stages without writing Python.

  vtr build --dataset sample ...       run the build-features flow in this process
  vtr train / vtr evaluate / vtr retrain   the training / evaluation flows (--model hanet|hgr|hcmi)
  vtr compare --models hanet hgr hcmi  train each on the same shards/seeds, one comparison table
  vtr sample-data --out data/sample    write the bundled sample dataset
  vtr validate out/sample              check a shard tree; exit 1 on any problem
  vtr import-checkpoint SRC DST [--model hanet|hgr]   a reference checkpoint -> our checkpoint
  vtr index / search / serve           search index over a dataset (flows/cli_search.py)

The flow subcommands are GENERATED from the flow functions' signatures and type hints
(``FLOW_COMMANDS``), so an option exists for every flow parameter and cannot drift:
``--name-with-dashes``, booleans as ``--x / --no-x``, lists as several values, dicts as JSON,
parameters without a default as positional arguments. Other subcommands register through
``PLUGINS``: modules with a ``register(subparsers)`` function.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal

from pipeline.feedback import debug_enabled, is_user_error, one_line

# subcommand -> (module, flow function, one-line help); the flow's module is imported only when
# its subcommand runs (or asks for --help), so `vtr search` does not pay for torch + Prefect flows
FLOW_COMMANDS: dict[str, tuple[str, str, str]] = {
    "build": ("flows.build", "build_features", "build a dataset's shards (flow build-features)"),
    "train": ("flows.train", "train", "train a model from shards, then evaluate it (flow train)"),
    "evaluate": ("flows.train", "evaluate", "evaluate a checkpoint on a split (flow evaluate)"),
    "retrain": ("flows.train", "retrain", "retrain when the shards changed (flow retrain)"),
    "compare": ("flows.compare", "compare", "train + evaluate several models on the same shards (flow compare)"),
    "export": ("flows.export", "export", "write a built dataset in HGR/HANet's released layout (flow export)"),
    "compare-features": ("flows.compare_features", "compare_features",
                         "per-video cosine + frame-alignment diagnosis of two feature sets (flow compare-features)"),
}
ALIASES: dict[tuple[str, str], list[str]] = {("build", "gpu_tasks"): ["--dask-gpu"]}  # kept for old scripts
PLUGINS = ("flows.cli_search", "flows.cli_refs")  # non-flow subcommands living elsewhere: module.register(subparsers)


def prepare_flow_run() -> None:
    """Before a flow runs in this process: the CLI's logging (flows/_feedback.py), a reachable server."""
    from flows._feedback import check_server, setup_cli_logging

    setup_cli_logging(debug_enabled())
    check_server()


def run_flow(flow: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Call a flow in this process (one place, so tests can observe the exact call)."""
    prepare_flow_run()
    return flow(**kwargs)


# ------------------------------------------------------------------ generated flow options

def _json_object(text: str) -> dict:
    try:
        value = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"i3d\": {\"clip_len\": 16}}'")
    return value


def _param_help(doc: str, name: str) -> str:
    """The docstring's sentence(s) about ``name`` (``name``: ...), if any."""
    m = re.search(rf"``{name}``[^:\n]*:\s*(.+?)(?=\s``\w+``[^:\n]*:|\n\s*\n|$)", doc, re.S)
    return " ".join(m.group(1).split()) if m else ""


def _strip_optional(hint):
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _add_param(p: argparse.ArgumentParser, command: str, name: str, param: inspect.Parameter, hint,
               doc: str) -> None:
    hint = _strip_optional(hint)
    origin = typing.get_origin(hint)
    default = param.default
    required = default is inspect.Parameter.empty
    flags = [f"--{name.replace('_', '-')}", *ALIASES.get((command, name), [])]
    help_text = _param_help(doc, name)
    kw: dict[str, Any] = {"help": help_text + ("" if required else f" (default: {default!r})")}
    if hint is bool:
        kw.update(action=argparse.BooleanOptionalAction)
    elif origin is Literal:
        kw.update(choices=list(typing.get_args(hint)), type=type(typing.get_args(hint)[0]))
    elif origin is list or hint is list:
        inner = (typing.get_args(hint) or (str,))[0]
        kw.update(nargs="*", type=inner)
    elif origin is dict or hint is dict:
        kw.update(type=_json_object, metavar="JSON")
    elif hint in (int, float, str):
        kw.update(type=hint)
    else:
        raise TypeError(f"{command}: parameter {name} has a type the CLI cannot map: {hint!r}")
    if required:
        p.add_argument(name, **{k: v for k, v in kw.items() if k != "action"})
    else:
        p.add_argument(*flags, dest=name, default=default, **kw)


def flow_parser(sub, command: str) -> argparse.ArgumentParser:
    """The subparser of ``command``, one option per parameter of its flow."""
    module, attr, help_line = FLOW_COMMANDS[command]
    flow = getattr(importlib.import_module(module), attr)
    fn = inspect.unwrap(getattr(flow, "fn", flow))
    hints = typing.get_type_hints(fn)
    doc = inspect.getdoc(fn) or ""
    p = sub.add_parser(command, help=help_line, description=doc,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, param in inspect.signature(fn).parameters.items():
        _add_param(p, command, name, param, hints.get(name, str), doc)

    def _run(a: argparse.Namespace) -> int:
        kwargs = {name: getattr(a, name) for name in inspect.signature(fn).parameters}
        run_flow(getattr(importlib.import_module(module), attr), kwargs)
        return 0

    p.set_defaults(fn=_run)
    return p


# ------------------------------------------------------------------ tools (not flows)

def _cmd_sample(a: argparse.Namespace) -> int:
    from pipeline.datasets.sample_data import generate_sample_dataset

    print(generate_sample_dataset(Path(a.out), n_videos=a.n_videos, seed=a.seed))
    return 0


def _cmd_validate(a: argparse.Namespace) -> int:
    from pipeline.datasets.validate import main as validate_main

    return validate_main([a.root])


def _cmd_import(a: argparse.Namespace) -> int:
    from models import registry
    from pipeline.learn.checkpoint_import import import_checkpoint

    if not registry.is_registered(a.model):
        raise ValueError(f"--model {a.model}: unknown model; known: {registry.model_names()}")
    if a.config and not Path(a.config).is_file():
        raise FileNotFoundError(f"--config {a.config}: no such file (a JSON file of the model's config fields)")
    cfg = registry.get_spec(a.model).config_cls.model_validate_json(Path(a.config).read_text()) if a.config else None
    options = {"fidelity": a.fidelity} if a.fidelity is not None else {}
    report = import_checkpoint(a.model, Path(a.src), Path(a.dst), cfg, strict=not a.no_strict, vocab=a.vocab,
                               shards=a.shards, verb_concepts=a.verb_concepts, noun_concepts=a.noun_concepts, **options)
    print(json.dumps(report, indent=2, default=str))
    return 0 if report.get("ok", True) else 1


def register_tools(sub) -> None:
    p = sub.add_parser("sample-data", help="write the deterministic sample dataset")
    p.add_argument("--out", default="data/sample")
    p.add_argument("--n-videos", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=_cmd_sample)
    p = sub.add_parser("validate", help="check a shard tree; exit 1 on inconsistency")
    p.add_argument("root")
    p.set_defaults(fn=_cmd_validate)
    p = sub.add_parser("import-checkpoint", help="import a reference checkpoint of a registered model "
                       "(--model hanet: Roc-Ng/HANet, hgr: cshizhe/hgr_v2t)")
    p.add_argument("src", help="the reference's checkpoint (e.g. epoch.N.th)")
    p.add_argument("dst", help="where to write our checkpoint")
    p.add_argument("--model", default="hanet", help="registered model whose importer reads SRC (default hanet)")
    p.add_argument("--config", default="", help="JSON FILE of the model's config fields (default: its defaults; "
                   "shapes and vocabulary size are read from the source)")
    p.add_argument("--no-strict", action="store_true", help="save even if tensors are left unfilled")
    p.add_argument("--vocab", default=None, help="the reference's int2word.npy or word2int.json")
    p.add_argument("--shards", default=None, help="shard tree to remap the vocabularies onto")
    p.add_argument("--verb-concepts", default=None, help="the reference's verb concepts in id order (HANet)")
    p.add_argument("--noun-concepts", default=None, help="the reference's noun concepts in id order (HANet)")
    p.add_argument("--fidelity", default=None, choices=["reference", "improved"],
                   help="HANetConfig.fidelity recorded in the checkpoint (HANet; default: reference)")
    p.set_defaults(fn=_cmd_import)


# ------------------------------------------------------------------ main

def _first_command(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None, all_flows: bool = False) -> argparse.ArgumentParser:
    """The `vtr` parser. Only the flow subcommand named in ``argv`` (or all, with ``all_flows``)
    gets its generated options; the others are listed with their one-line help."""
    parser = argparse.ArgumentParser(prog="vtr", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors (also VTR_DEBUG=1)")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    wanted = _first_command(argv or [])
    for command, (_, _, help_line) in FLOW_COMMANDS.items():
        if all_flows or command == wanted:
            flow_parser(sub, command)
        else:
            sub.add_parser(command, help=help_line, add_help=False)
    register_tools(sub)
    for plugin in PLUGINS:
        importlib.import_module(plugin).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user error (pipeline/feedback.py) is one line on stderr and exit code 2; a
    traceback only for a bug, or with ``--debug`` (anywhere on the line) / ``VTR_DEBUG=1``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # in-process runs start a temporary Prefect server: Prefect's 20 s start limit is short on a busy machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    before = os.environ.get("VTR_DEBUG")
    if "--debug" in argv:  # for this command only (tests call main() in one process)
        argv = [a for a in argv if a != "--debug"]
        os.environ["VTR_DEBUG"] = "1"
    args = build_parser(argv).parse_args(argv)
    try:
        return args.fn(args)
    except Exception as exc:
        from flows._feedback import environment_error

        message = one_line(exc) if is_user_error(exc) else environment_error(exc)
        if debug_enabled() or message is None:
            raise
        print(f"vtr {_first_command(argv) or ''}: {message}", file=sys.stderr)
        return 2
    finally:
        if before is None:
            os.environ.pop("VTR_DEBUG", None)
        else:
            os.environ["VTR_DEBUG"] = before


if __name__ == "__main__":
    sys.exit(main())
