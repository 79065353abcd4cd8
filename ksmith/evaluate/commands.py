"""CLI: `ksmith evaluate` and `ksmith export-lmeval`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score every probe of a config before and after an update; write metrics",
        description="Score every probe before and after an update (or with no update: the "
        "baseline) and write predictions.parquet, metrics.json and eval.json to --out.",
    )
    p.add_argument("--model", required=True, help="base model folder or Hub id")
    p.add_argument("--dataset", required=True, type=Path, help="ksmith dataset folder")
    p.add_argument("--config", required=True, help="probe config, e.g. biology.edit.leaf.k10")
    p.add_argument("--update", type=Path, default=None, help="update folder (ksmith update)")
    p.add_argument("--out", required=True, type=Path, help="results folder to write")
    p.add_argument("--backend", default="hf", help="hf (default) or vllm")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--batch-size", type=int, default=32, help="probes scored per forward pass (default: 32)"
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="before-stage cache (default ~/.cache/ksmith/before)",
    )
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument("--lmeval-tasks", default="", help="comma-separated lm-eval tasks to run")
    p.add_argument("--lmeval-limit", type=int, default=None, help="examples per lm-eval task")
    p.add_argument(
        "--lmeval-include-path",
        type=Path,
        default=None,
        help="extra lm-eval task folder (e.g. from export-lmeval)",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument(
        "--retain",
        type=Path,
        default=None,
        help="an unlearn config: the retain model's evaluation of the same config (ksmith "
        "evaluate --model RETAIN_MODEL); adds the metrics against it (docs/unlearning.md)",
    )
    p.set_defaults(func=_evaluate)

    e = sub.add_parser(
        "export-lmeval",
        help="write lm-eval task YAMLs over a ksmith dataset",
        description="Write one lm-eval task per config and probe format "
        "(ksmith_<config>_<format>) plus groups, for `lm_eval --include_path TASKS_DIR`.",
    )
    e.add_argument("dataset", type=Path, help="ksmith dataset folder")
    e.add_argument("--out", required=True, type=Path, help="task folder to write")
    e.add_argument("--configs", default="", help="comma-separated configs (default: all)")
    e.add_argument(
        "--target",
        choices=("after", "before"),
        default="after",
        help="score against the after (default) or the before answers",
    )
    e.set_defaults(func=_export)


def _evaluate(args: argparse.Namespace) -> int:
    from ksmith.errors import KsmithError
    from ksmith.evaluate.lmeval import parse_tasks
    from ksmith.evaluate.metrics import headline
    from ksmith.evaluate.runner import EvalOptions, evaluate

    for flag, value, low in (
        ("--batch-size", args.batch_size, 1),
        ("--lmeval-limit", args.lmeval_limit, 1),
        ("--seed", args.seed, 0),
    ):
        if value is not None and value < low:
            raise KsmithError(f"{flag}: must be at least {low}, got {value}")
    options = EvalOptions(
        backend=args.backend,
        device=args.device,
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        lmeval_tasks=tuple(parse_tasks(args.lmeval_tasks)),
        lmeval_limit=args.lmeval_limit,
        lmeval_include_path=args.lmeval_include_path,
        seed=args.seed,
    )
    result = evaluate(
        args.model,
        args.dataset,
        args.config,
        out=args.out,
        update=args.update,
        options=options,
        retain=args.retain,
    )
    for name, m in headline(result["metrics"]).items():
        lo, hi = m["ci"]
        log.info("%-28s %.4f  [%.4f, %.4f]  n=%d", name, m["value"], lo, hi, m["n"])
    log.info("wrote %s", args.out)
    return 0


def _export(args: argparse.Namespace) -> int:
    from ksmith.evaluate.lmeval import export_lmeval, parse_tasks

    names = export_lmeval(
        args.dataset, args.out, configs=parse_tasks(args.configs) or None, target=args.target
    )
    log.info(
        "wrote %d lm-eval tasks to %s (lm_eval --include_path %s --tasks ...)",
        len(names),
        args.out,
        args.out,
    )
    return 0
