"""CLI: ``ksmith pretrain DATASET_DIR --out MODEL_DIR`` and ``ksmith retain DATASET_DIR --out
MODEL_DIR`` (the retain model: docs/unlearning.md)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="train the world model on a dataset's corpus (or fine-tune --base on it)",
        description=(
            "Train a tokenizer and a small causal LM on the world's training corpus for the "
            "spec's step budget (max_steps; with stop_early, until the knowledge check reaches "
            "the thresholds), measure its capability profile, and write a Hugging Face model "
            "folder with a model card; fail, writing nothing, when the profile falls short of "
            "the thresholds (unless allow_below_threshold). With --base, fine-tune that model "
            "on the corpus instead."
        ),
    )
    _common(p, "e.g. --set layers=4")
    p.add_argument("--base", metavar="PATH_OR_ID", help="fine-tune this causal LM instead")
    p.set_defaults(func=_pretrain)

    r = subparsers.add_parser(
        "retain",
        help="train the retain model: the world model without the dataset's forget set",
        description=(
            "Train the world model's recipe (same spec, seed, tokenizer vocabulary and corpus "
            "recipe) on the world without the union of the dataset's unlearning requests, the "
            "closure recomputed (facts entailed only through a forgotten fact are gone too). "
            "The model card names the forget set; forget_set.json lists it."
        ),
    )
    _common(r, "use the world model's overrides")
    r.add_argument(
        "--suite",
        metavar="YAML",
        help="the suite the dataset was generated from (default: the dataset's spec.yaml)",
    )
    r.add_argument("--size", help="the --size the dataset was generated with, if any")
    r.add_argument(
        "--configs",
        default="*",
        metavar="GLOB",
        help="unlearn configs whose requests form the forget set (default: all; e.g. "
        "'*.unlearn.leaf.*' for one level)",
    )
    r.set_defaults(func=_retain)


def _common(p: argparse.ArgumentParser, set_hint: str) -> None:
    """The arguments `pretrain` and `retain` share: dataset, output, spec and its overrides."""
    p.add_argument("dataset", metavar="DATASET_DIR", help="dataset folder (ksmith generate)")
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="model folder to write")
    p.add_argument(
        "--spec", metavar="YAML", help="world-model spec (default specs/world/default.yaml)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override one spec field (repeatable); {set_hint}",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _pretrain(args: argparse.Namespace) -> int:
    import logging

    from ksmith.world.pretrain import pretrain
    from ksmith.world.spec import load_world_spec

    spec = load_world_spec(args.spec, args.overrides)
    meta = pretrain(
        args.dataset,
        args.out,
        spec,
        base=args.base,
        device=args.device,
        progress=not args.no_progress,
    )
    logging.getLogger("ksmith.world").info(
        "wrote %s: recall=%s mcq_accuracy=%s train_seconds=%s",
        args.out,
        meta["recall"],
        meta["mcq_accuracy"],
        meta["train_seconds"],
    )
    return 0


def _retain(args: argparse.Namespace) -> int:
    import logging

    from ksmith.world.retain import pretrain_retain
    from ksmith.world.spec import load_world_spec

    spec = load_world_spec(args.spec, args.overrides)
    meta = pretrain_retain(
        args.dataset,
        args.out,
        spec,
        suite=args.suite,
        size=args.size,
        configs=args.configs,
        device=args.device,
        progress=not args.no_progress,
    )
    logging.getLogger("ksmith.world").info(
        "wrote %s: retain model without %d facts (forget set %s), recall=%s, "
        "train_seconds=%s train_cpu_seconds=%s",
        args.out,
        meta["retain"]["forget_facts"],
        meta["retain"]["forget_fingerprint"][:12],
        meta["recall"],
        meta["train_seconds"],
        meta["train_cpu_seconds"],
    )
    return 0
