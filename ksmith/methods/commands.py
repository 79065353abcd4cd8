"""CLI: ``ksmith update`` (apply a method to a dataset config) and ``ksmith methods`` (list)."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ksmith.errors import KsmithError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpdateRun:
    """Everything ``ksmith update`` needs (the options object behind the CLI)."""

    model: str
    dataset: str
    config: str
    method: str
    out: str
    overrides: tuple[str, ...] = ()
    mode: str = "batch"
    groups: tuple[int, ...] | None = None
    device: str = "auto"
    seed: int = 0
    specs_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Sequential mode: counts of edits after which each group's state is saved too.
    checkpoints: tuple[int, ...] = ()


def _local_config(path: str) -> Any | None:
    """The model's config read without loading weights (None if the config is not local)."""
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception:  # not a local folder or cached id: decided after loading the model
        return None


def _card_fingerprint(card: dict[str, Any]) -> str | None:
    block = card.get("ksmith", card) if isinstance(card, dict) else {}
    return block.get("fingerprint") if isinstance(block, dict) else None


def update_from_dataset(run: UpdateRun) -> dict[str, Any]:
    """Load the model once, apply `run.method` to each group of `run.config`, write `run.out`.

    Returns the update.json content. Errors (unknown method, kind mismatch, bad parameter,
    missing group, diverged update) are KsmithErrors raised before anything is written.
    """
    from ksmith.data import load_corpus, load_requests, read_card
    from ksmith.methods import get_method
    from ksmith.methods.checkpoints import check_checkpoints
    from ksmith.methods.layers import model_depth
    from ksmith.methods.params import resolve_params
    from ksmith.methods.problem import build_problems, config_kind
    from ksmith.methods.runner import run_update
    from ksmith.models import load_model, model_fingerprint, resolve_device

    if run.mode not in ("batch", "sequential"):
        raise KsmithError(f"--mode must be batch or sequential, not {run.mode!r}")
    check_checkpoints(run.checkpoints, "--checkpoints")
    if run.checkpoints and run.mode != "sequential":
        raise KsmithError("--checkpoints: states along a stream of edits need --mode sequential")
    cls = get_method(run.method)
    where = f"{run.dataset} config {run.config}"
    rows = load_requests(run.dataset, run.config)
    kind = config_kind(rows, where=where)
    if cls.kind != kind:
        raise KsmithError(
            f"method '{cls.name}' is of kind {cls.kind} but config {run.config} holds {kind} "
            "requests; list methods and their kinds with `ksmith methods`"
        )
    config = _local_config(run.model)
    params = None
    if config is not None:  # validate parameters before the (slow) model load
        params = resolve_params(
            cls, model_type=config.model_type, overrides=run.overrides, specs_dir=run.specs_dir,
            num_layers=model_depth(config),
        )  # fmt: skip
    device = resolve_device(run.device)
    model, tokenizer = load_model(run.model, device=device)
    if params is None:
        params = resolve_params(
            cls,
            model_type=model.config.model_type,
            overrides=run.overrides,
            specs_dir=run.specs_dir,
            num_layers=model_depth(model),
        )
    method = cls(params)
    problems = build_problems(
        rows, target=method.target_kind(), mode=run.mode, seed=run.seed, groups=run.groups,
        where=where,
    )  # fmt: skip
    # The world's corpus and the model's identity, for methods that need corpus statistics.
    corpus = tuple(load_corpus(run.dataset))
    fingerprint = model_fingerprint(run.model)
    problems = {
        g: replace(p, corpus=corpus, model_fingerprint=fingerprint) for g, p in problems.items()
    }
    record = {
        "model": {
            "path": run.model,
            "fingerprint": fingerprint,
            "model_type": model.config.model_type,
        },
        "dataset_path": str(run.dataset),
        "dataset_fingerprint": _card_fingerprint(read_card(run.dataset)),
        "config": run.config,
        **run.extra,
    }
    return run_update(
        model,
        tokenizer,
        method,
        problems,
        run.out,
        record=record,
        reload_model=lambda: load_model(run.model, device=device)[0],
        checkpoints=run.checkpoints,
    )


def _parse_groups(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise KsmithError(f"--groups expects comma-separated integers, got {text!r}") from e


def parse_checkpoints(text: str | None) -> tuple[int, ...]:
    """``"1,10,100"`` -> ``(1, 10, 100)``; empty or None -> ()."""
    if not text:
        return ()
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise KsmithError(f"--checkpoints expects comma-separated integers, got {text!r}") from e


def _cmd_update(args: argparse.Namespace) -> int:
    run = UpdateRun(
        model=args.model,
        dataset=args.dataset,
        config=args.config,
        method=args.method,
        out=args.out,
        overrides=tuple(args.set or ()),
        mode=args.mode,
        groups=_parse_groups(args.groups),
        device=args.device,
        seed=args.seed,
        specs_dir=args.specs_dir,
        checkpoints=parse_checkpoints(args.checkpoints),
    )
    info = update_from_dataset(run)
    changed = sum(g["changed_parameters"] for g in info["groups"])
    log.info(
        "wrote %s: %s on %d group(s), %d parameters changed in all, %.1fs",
        Path(args.out), info["method"], len(info["groups"]), changed, info["wall_seconds"],
    )  # fmt: skip
    return 0


def method_table() -> list[dict[str, str]]:
    """name, kind, paper of every registered method (built-ins and plugins), by name."""
    from ksmith.methods import METHODS, load_builtin_methods

    load_builtin_methods()
    rows = []
    for name in METHODS.names():
        cls = METHODS.get(name)
        rows.append({"name": name, "kind": cls.kind, "paper": cls.paper})
    return rows


def _cmd_methods(args: argparse.Namespace) -> int:
    rows = method_table()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in ("name", "kind")}
    print(f"{'name':<{widths['name']}}  {'kind':<{widths['kind']}}  paper")
    for r in rows:
        print(f"{r['name']:<{widths['name']}}  {r['kind']:<{widths['kind']}}  {r['paper']}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "update",
        help="apply an editing or unlearning method to every group of a dataset config",
        description="Apply METHOD to each group of CONFIG (each on a fresh copy of the base "
        "weights) and write the update folder (docs/contracts.md section 5).",
    )
    p.add_argument("--model", required=True, help="model folder or Hub id")
    p.add_argument("--dataset", required=True, help="dataset folder (ksmith generate)")
    p.add_argument("--config", required=True, help="config name, e.g. biology.edit.leaf.k10")
    p.add_argument("--method", required=True, help="method name (see `ksmith methods`)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a method hyper-parameter (YAML value); repeatable",
    )
    p.add_argument(
        "--mode",
        choices=("batch", "sequential"),
        default="batch",
        help="batch: a group's requests at once; sequential: one after another (lifelong)",
    )
    p.add_argument(
        "--checkpoints",
        metavar="N,N,...",
        help="with --mode sequential: also save each group's state after these counts of "
        "edits (increasing; counts >= k are skipped), for evaluation along the stream",
    )
    p.add_argument("--groups", help="comma-separated group indices (default: all)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=0, help="torch seed set before each group")
    p.add_argument(
        "--specs-dir",
        help="folder holding methods/<name>.yaml, tried first; then a plugin's own "
        "<name>.yaml next to its module, then ksmith's specs/methods/",
    )
    p.add_argument("--out", required=True, help="update folder to write")
    p.set_defaults(func=_cmd_update)

    m = subparsers.add_parser("methods", help="list update methods: name, kind, paper")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")
    m.set_defaults(func=_cmd_methods)
