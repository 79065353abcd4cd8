"""The stages that run the matrix's cells: ``ksmith pipeline update|evaluate|submit``.

Each runs one method's cells (``--method NAME``; evaluate: ``none``, the no-update baseline) or,
as dvc.yaml does, every method's at once (``--method all``): one pool of workers for every
cell, so both cores stay busy to the stage's end and the stage starts its processes once. Cells
are keyed (`ksmith.pipeline.cells`); the stage's cell store keeps the last run's, so a rerun
computes only the cells whose inputs changed (`ksmith.pipeline.store`).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ksmith.errors import KsmithError
from ksmith.pipeline.commands import (
    ALL,
    BASELINE,
    NO_RETAIN,
    SUBMISSION_PREFIX,
    model_id,
    resolve_model,
)

log = logging.getLogger(__name__)


def _warm(model: str, *modules: str) -> tuple[str, ...]:
    """What a stage's workers import while the parent plans (`stage_workers`): `modules` and
    the transformers class of `model` when it is a local folder naming its architecture."""
    try:
        config = json.loads((Path(model) / "config.json").read_text())
        classes = tuple(f"transformers:{a}" for a in config.get("architectures") or ())
    except (OSError, ValueError, AttributeError):
        classes = ()
    return (*modules, *classes)


def _done(params) -> None:
    """A stage's outputs are complete: with local workers (now gone), the process may end
    without its teardown (`ksmith.cli.exit_without_teardown`)."""
    if params.executor == "local":
        from ksmith.cli import exit_without_teardown

        exit_without_teardown()


def _check_method(args: argparse.Namespace, params, method: str | None) -> None:
    if method is not None and method not in params.methods:
        raise KsmithError(f"{args.params}: method '{method}' is not in field 'methods'")


def _method_cells(args: argparse.Namespace, method: str | None, params=None):
    from ksmith.data import list_configs
    from ksmith.pipeline.matrix import cells_for
    from ksmith.pipeline.params import load_params

    params = params if params is not None else load_params(args.params)
    kind = getattr(args, "kind", None)
    if method is not None:
        from ksmith.methods import get_method

        _check_method(args, params, method)
        kind = get_method(method).kind
        if getattr(args, "kind", None) not in (None, kind):
            raise KsmithError(f"--kind {args.kind}: method '{method}' is an {kind} method")
    return params, cells_for(params, method, kind, list_configs(args.dataset))


def update(args: argparse.Namespace) -> int:
    from ksmith.pipeline.params import load_params
    from ksmith.pipeline.workers import stage_workers

    params = load_params(args.params)
    _stage_methods(args, params, args.method)
    warm = _warm(resolve_model(args.model), "ksmith.methods.commands")
    with stage_workers(params, warm) as pool:  # before torch is imported here
        code = _update_cells(args, params, pool)
    _done(params)
    return code


def _stage_methods(args: argparse.Namespace, params, method: str) -> list[str]:
    """The methods a stage runs: params' every method for `all`, else the one named."""
    if method == ALL:
        if not params.methods:
            raise KsmithError(f"{args.params}: field 'methods' is empty: nothing to run")
        return list(params.methods)
    _check_method(args, params, method)
    return [method]


def _update_cells(args: argparse.Namespace, params, pool) -> int:
    from ksmith.io import atomic_output_dir
    from ksmith.pipeline.workers import run_stage

    methods = _stage_methods(args, params, args.method)
    with atomic_output_dir(args.out, kind="pipeline-updates") as tmp:
        if args.method == ALL:
            jobs = [
                job for m in methods
                for job in _update_jobs(args, params, m, tmp / m, prefix=f"{m}.")
            ]  # fmt: skip
        else:
            jobs = _update_jobs(args, params, args.method, tmp)
        run_stage(jobs, params, out=args.out, desc=f"update {args.method}", pool=pool)
    return 0


def _update_jobs(args: argparse.Namespace, params, method: str, out: Path, prefix: str = ""):
    from ksmith.methods import get_method
    from ksmith.methods.commands import UpdateRun
    from ksmith.methods.source import method_code
    from ksmith.methods.trained.commands import TRAINED_METHODS
    from ksmith.pipeline.cells import update_jobs
    from ksmith.pipeline.params import as_overrides

    params, cells = _method_cells(args, method, params)
    chosen = dict(params.overrides.get(method, {}))
    if method in TRAINED_METHODS and "editor_path" not in chosen and args.editors:
        chosen["editor_path"] = str(Path(args.editors) / method)
    reads = [chosen["editor_path"]] if "editor_path" in chosen else []
    overrides = as_overrides(chosen)
    code = method_code(get_method(method))
    code = {"module": code["module"], "sha256": code["sha256"]}  # recorded in each update.json
    template = UpdateRun(
        model=resolve_model(args.model), dataset=args.dataset, config="", method=method,
        out="", overrides=overrides, mode=params.mode, device=params.device, extra={"code": code},
        checkpoints=tuple(params.checkpoints),
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    return update_jobs(cells, template, out, reads=reads, prefix=prefix)


def evaluate(args: argparse.Namespace) -> int:
    from ksmith.io import atomic_output_dir
    from ksmith.pipeline.params import load_params
    from ksmith.pipeline.workers import stage_workers

    params = load_params(args.params)
    methods = _evaluated(args, params)
    if any(m != BASELINE for m in methods) and not args.updates:
        raise KsmithError(f"--updates is required unless --method {BASELINE}")
    if (Path(args.model) / NO_RETAIN).is_file():
        for m in methods:
            _method_cells(args, None if m == BASELINE else m, params)  # the same checks
        # the pretrain stage trained no retain model (model.base): nothing to evaluate
        with atomic_output_dir(args.out, kind="pipeline-results") as tmp:
            (tmp / NO_RETAIN).write_text((Path(args.model) / NO_RETAIN).read_text())
        return 0
    warm = _warm(resolve_model(args.model), "ksmith.evaluate.runner")
    with stage_workers(params, warm) as pool:  # before torch is imported here
        code = _evaluate_cells(args, methods, params, pool)
    _done(params)
    return code


def _evaluated(args: argparse.Namespace, params) -> list[str]:
    """The methods an evaluate stage runs (`none`: the baseline), in params' order."""
    if args.method == BASELINE:
        return [BASELINE]
    return [*_stage_methods(args, params, args.method), *([BASELINE] * (args.method == ALL))]


def _evaluate_cells(args: argparse.Namespace, methods: list[str], params, pool) -> int:
    from ksmith.evaluate.runner import EvalOptions
    from ksmith.io import atomic_output_dir
    from ksmith.pipeline.cells import evaluate_jobs
    from ksmith.pipeline.workers import run_stage

    retain = args.retain
    if retain is not None and (Path(retain) / NO_RETAIN).is_file():
        log.info("%s: no retain model, so no metrics against it", retain)
        retain = None
    options = EvalOptions(
        backend=params.backend,
        device=params.device,
        batch_size=params.batch_size,
        lmeval_tasks=tuple(params.lmeval.tasks),
        lmeval_limit=params.lmeval.limit,
    )
    with atomic_output_dir(args.out, kind="pipeline-results") as tmp:
        jobs = []
        several = args.method == ALL
        for m in methods:
            method = None if m == BASELINE else m
            _, cells = _method_cells(args, method, params)
            updates = None if method is None else args.updates
            if several and updates is not None:
                updates = str(Path(updates) / m)
            out = tmp / m if several else tmp
            out.mkdir(exist_ok=True)
            jobs += evaluate_jobs(
                cells, model=resolve_model(args.model), dataset=args.dataset, updates=updates,
                options=options, out=out, retain=retain, retain_seed=params.seeds[0],
                prefix=f"{m}." if several else "",
            )  # fmt: skip
        run_stage(jobs, params, out=args.out, desc=f"evaluate {args.method}", pool=pool)
    return 0


def submit(args: argparse.Namespace) -> int:
    from ksmith.leaderboard import SubmitOptions, write_submission
    from ksmith.pipeline.params import load_params

    params = load_params(args.params)
    options = SubmitOptions(
        dataset=args.dataset, model_id=model_id(params.model.base), retain=args.retain
    )
    if args.method != ALL:
        write_submission(_evaluated_cells(args.results), args.out, options)
        return 0
    from ksmith.io import atomic_output_dir

    methods = [*_stage_methods(args, params, ALL), BASELINE]
    folders = {m: _evaluated_cells(Path(args.results) / m) for m in methods}  # all checked first
    with atomic_output_dir(args.out, kind="pipeline-submissions") as tmp:
        for m, cells in folders.items():
            write_submission(cells, tmp / f"{SUBMISSION_PREFIX}{m}", options)
    return 0


def _evaluated_cells(results: str | Path) -> list[Path]:
    cells = sorted(p.parent for p in Path(results).glob("*/metrics.json"))
    if not cells:
        raise KsmithError(f"{results}: no evaluated cells (*/metrics.json)")
    return cells
