"""`vtr` command line: the same flows and stages without writing Python.

  vtr build --dataset sample ...       run the build-features flow in this process
  vtr train / vtr evaluate             run the training / evaluation flows
  vtr sample-data --out data/sample    write the bundled sample dataset
  vtr validate out/sample              check a shard tree; exit 1 on any problem
  vtr import-checkpoint SRC DST        Roc-Ng/HANet state dict -> our checkpoint
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _json(text: str) -> dict:
    return json.loads(text) if text else {}


def _cmd_build(a: argparse.Namespace) -> int:
    from flows.build import build_features

    build_features(dataset=a.dataset, dataset_root=a.dataset_root, annotation=a.annotation,
                   out_root=a.out_root, format=a.format, extractors=a.extractors, max_frames=a.max_frames,
                   frame_stride=a.frame_stride, batch_size=a.batch_size, device=a.device, weights=a.weights,
                   allow_random_weights=a.allow_random_weights, shard_size=a.shard_size, force=a.force,
                   runner=a.runner, n_workers=a.n_workers, dask_address=a.dask_address or None,
                   ray_address=a.ray_address or None, gpu_tasks=a.gpu_tasks, overrides=_json(a.overrides))
    return 0


def _cmd_train(a: argparse.Namespace) -> int:
    from flows.train import train

    train(dataset=a.dataset, out_root=a.out_root, runs_root=a.runs_root, run_name=a.run_name,
          epochs=a.epochs, batch_size=a.batch_size, max_steps_per_epoch=a.max_steps_per_epoch,
          overrides=_json(a.overrides))
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from flows.train import evaluate

    evaluate(checkpoint=a.checkpoint, dataset=a.dataset, out_root=a.out_root, split=a.split)
    return 0


def _cmd_sample(a: argparse.Namespace) -> int:
    from pipeline.sample_data import generate_sample_dataset

    print(generate_sample_dataset(Path(a.out), n_videos=a.n_videos, seed=a.seed))
    return 0


def _cmd_validate(a: argparse.Namespace) -> int:
    from pipeline.validate import main as validate_main

    return validate_main([a.root])


def _cmd_import(a: argparse.Namespace) -> int:
    from models.config import HANetConfig
    from models.import_reference import import_reference_checkpoint

    from models.import_reference import vocab_kwargs

    report = import_reference_checkpoint(Path(a.src), Path(a.dst), HANetConfig.model_validate(_json(a.config)),
                                         **vocab_kwargs(a))
    print(json.dumps(report, indent=2, default=str))
    return 0


def _add_build(sub) -> None:
    p = sub.add_parser("build", help="build a dataset's shards (flow build-features)")
    p.add_argument("--dataset", default="sample")
    p.add_argument("--dataset-root", default="data/sample/videos")
    p.add_argument("--annotation", default="data/sample/annotation.json")
    p.add_argument("--out-root", default="out")
    p.add_argument("--format", default="msrvtt", choices=["msrvtt", "vatex", "manifest"])
    p.add_argument("--extractors", nargs="+", default=["resnet152", "i3d_r50"])
    p.add_argument("--max-frames", type=int, default=20)
    p.add_argument("--frame-stride", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--weights", default="pretrained", help="pretrained | random | a local weights file")
    p.add_argument("--allow-random-weights", action="store_true")
    p.add_argument("--shard-size", type=int, default=64)
    p.add_argument("--force", nargs="*", default=[], help="stage names to recompute")
    p.add_argument("--runner", default="local", choices=["local", "dask", "ray"],
                   help="ray is optional: .venv/bin/pip install -r requirements/ray.txt")
    p.add_argument("--n-workers", type=int, default=2)
    p.add_argument("--dask-address", default="", help="existing dask.distributed scheduler (else a LocalCluster)")
    p.add_argument("--ray-address", default="", help="existing Ray cluster, e.g. ray://head:10001 (else a local Ray)")
    p.add_argument("--gpu-tasks", "--dask-gpu", dest="gpu_tasks", action="store_true",
                   help="extraction tasks request a GPU from the engine (dask or ray)")
    p.add_argument("--overrides", default="", help="JSON of nested BuildConfig fields")
    p.set_defaults(fn=_cmd_build)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train HANet from shards, then evaluate (flow train)")
    p.add_argument("--dataset", default="sample")
    p.add_argument("--out-root", default="out")
    p.add_argument("--runs-root", default="runs")
    p.add_argument("--run-name", default="")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-steps-per-epoch", type=int, default=0)
    p.add_argument("--overrides", default="", help="JSON of nested TrainConfig fields")
    p.set_defaults(fn=_cmd_train)
    p = sub.add_parser("evaluate", help="evaluate a checkpoint (flow evaluate)")
    p.add_argument("checkpoint")
    p.add_argument("--dataset", default="sample")
    p.add_argument("--out-root", default="out")
    p.add_argument("--split", default="test")
    p.set_defaults(fn=_cmd_evaluate)


def _add_tools(sub) -> None:
    p = sub.add_parser("sample-data", help="write the deterministic sample dataset")
    p.add_argument("--out", default="data/sample")
    p.add_argument("--n-videos", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=_cmd_sample)
    p = sub.add_parser("validate", help="check a shard tree; exit 1 on inconsistency")
    p.add_argument("root")
    p.set_defaults(fn=_cmd_validate)
    p = sub.add_parser("import-checkpoint", help="import a Roc-Ng/HANet checkpoint")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--config", default="", help="JSON of HANetConfig fields matching the checkpoint")
    from models.import_reference import add_vocab_arguments  # --vocab --shards --verb/noun-concepts --fidelity

    add_vocab_arguments(p)
    p.set_defaults(fn=_cmd_import)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vtr", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(required=True)
    _add_build(sub)
    _add_train(sub)
    _add_tools(sub)
    __import__("flows.cli_search", fromlist=["register"]).register(sub)  # vtr index / search / serve
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
