"""CLI: ``ksmith pipeline pretrain|update|evaluate|submit|report``, the stages `dvc.yaml` runs.

Each stage reads `params.yaml` (the keys dvc.yaml declares for it) and runs its cells in one
process, in `workers` processes side by side, or as tasks on a Ray cluster (`executor: ray`;
`ksmith.pipeline.workers`), so a stage pays Python's and torch's start-up once per process,
not once per cell. A stage's output folder is written atomically: a stage killed part-way
leaves the previous output or none, and its finished cells, which the next run reuses. The
stages that run the matrix's cells (update, evaluate, submit) are in `ksmith.pipeline.cell_stages`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ksmith.errors import KsmithError

log = logging.getLogger(__name__)

POINTER = "ksmith-model.json"
ALL = "all"  # --method all: every method of params.yaml in one stage (dvc.yaml)
BASELINE = "none"
SUBMISSION_PREFIX = "world-"  # out/submissions/world-<method>: the world model's submissions
# The leaderboard id of the world model the pretrain stage trains from scratch.
WORLD_MODEL_ID = "ksmith-world-model"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("pipeline", help="the DVC pipeline's stages (see dvc.yaml)")
    sub = p.add_subparsers(dest="stage", metavar="STAGE", required=True)

    def stage(name: str, help: str) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help)
        s.add_argument("--params", default="params.yaml", help="pipeline parameters")
        return s

    s = stage("pretrain", "train the world model, or fine-tune / point at params' model.base")
    s.add_argument("--dataset", required=True, help="dataset folder (the generate stage's out)")
    s.add_argument("--out", required=True, help="model folder to write")
    s.add_argument(
        "--retain",
        help="also train the retain model (the world without the dataset's forget set: ksmith "
        "retain) into this folder, side by side in a second process with the same threads",
    )
    s.set_defaults(func=_pretrain)

    s = stage(
        "code",
        "write out/code/<method>.json, a fingerprint of each method's code (plugins too), for "
        "the update stage's deps",
    )
    s.add_argument("--out", required=True, help="folder for <method>.json files")
    s.set_defaults(func=_code)

    s = stage(
        "editors",
        "train the editor of each trained method in params' methods (MEND, SERAC) on the "
        "world's training split; every other method gets a placeholder folder",
    )
    s.add_argument("--dataset", required=True, help="dataset folder (the generate stage's out)")
    s.add_argument("--model", required=True, help="model folder (the pretrain stage's out)")
    s.add_argument("--out", required=True, help="folder for <method>/ editor folders")
    s.set_defaults(func=_editors)

    s = stage(
        "update",
        "apply one method (or, with --method all, every method of params) to every cell of the "
        "matrix",
    )
    s.add_argument(
        "--method",
        required=True,
        help="method name (one of params' methods), or all: every method, each into <out>/<method>",
    )
    s.add_argument("--dataset", required=True, help="dataset folder (the generate stage's out)")
    s.add_argument("--model", required=True, help="model folder (the pretrain stage's out)")
    s.add_argument(
        "--out", required=True, help="folder for the method's update folders (all: <method>/ each)"
    )
    s.add_argument(
        "--editors",
        help="the editors stage's folder: a trained method without an editor_path override "
        "uses <editors>/<method>",
    )
    s.set_defaults(func=_update)

    s = stage(
        "evaluate",
        "evaluate one method's cells (the no-update baseline: --method none; every method of "
        "params and the baseline: --method all)",
    )
    s.add_argument(
        "--method",
        required=True,
        help="method name, none for the baseline, or all: every method and the baseline, each "
        "into <out>/<method> (none: <out>/none)",
    )
    s.add_argument("--dataset", required=True, help="dataset folder (the generate stage's out)")
    s.add_argument("--model", required=True, help="model folder (the pretrain stage's out)")
    s.add_argument(
        "--updates",
        help="the method's update folder (not for --method none; all: the folder of every "
        "method's, <updates>/<method>)",
    )
    s.add_argument(
        "--out", required=True, help="folder for the method's result folders (all: <method>/ each)"
    )
    s.add_argument(
        "--retain",
        help="the retain stage's folder: each unlearn cell is also measured against the retain "
        "model's evaluation of its config (docs/unlearning.md)",
    )
    s.add_argument(
        "--kind", choices=("edit", "unlearn"), help="only the cells of this kind (default: all)"
    )
    s.set_defaults(func=_evaluate)

    s = stage(
        "submit",
        "one method's evaluated cells as a leaderboard submission; the model id comes from "
        "params (model.base, else the world model's id)",
    )
    s.add_argument(
        "--results",
        required=True,
        help="one method's results folder (of cells); with --method all, the folder of every "
        "method's (<results>/<method>)",
    )
    s.add_argument("--dataset", required=True, help="dataset folder (the generate stage's out)")
    s.add_argument(
        "--out",
        required=True,
        help="submission folder to write; with --method all, the folder of every submission, "
        f"<out>/{SUBMISSION_PREFIX}<method> (the baseline: {SUBMISSION_PREFIX}none)",
    )
    s.add_argument(
        "--method",
        choices=(ALL,),
        help="all: a submission for every method of params and for the baseline",
    )
    s.add_argument(
        "--retain",
        help="the retain stage's folder: unlearn cells measured against the retain model carry "
        "its per-item rows and theirs, so `ksmith leaderboard verify` recomputes those metrics",
    )
    s.set_defaults(func=_submit)

    s = stage("report", "tables, plots and DVC metrics from every evaluated cell")
    s.add_argument("--results", required=True, help="folder of every method's results")
    s.add_argument("--out", required=True, help="report folder to write")
    s.add_argument(
        "--model",
        help="the evaluated model's pipeline folder: its card's capability profile leads the "
        "report",
    )
    s.set_defaults(func=_report)


def resolve_model(path: str | Path) -> str:
    """The model a pipeline model folder stands for: itself, or the model its pointer names."""
    pointer = Path(path) / POINTER
    if pointer.exists():
        return json.loads(pointer.read_text())["model"]
    return str(path)


def model_id(base: str | None) -> str:
    """The leaderboard id of the pipeline's model: params' `model.base` as given (a Hub id), the
    folder name of a local `model.base` (an id, never a local path), else the world model's."""
    if base is None:
        return WORLD_MODEL_ID
    path = Path(base)
    if path.is_absolute() or base.startswith((".", "~")) or path.exists():
        return path.expanduser().resolve().name or base
    return base


def _pretrain(args: argparse.Namespace) -> int:
    from ksmith.io import atomic_output_dir, write_json
    from ksmith.pipeline.params import as_overrides, load_params
    from ksmith.world.pretrain import pretrain
    from ksmith.world.spec import load_world_spec

    params = load_params(args.params)
    m = params.model
    if m.base is not None and args.retain:
        # A retain model is the same recipe without the forget set; for a given base model that
        # would mean its own pretraining, which ksmith does not have.
        with atomic_output_dir(args.retain, kind="model-pointer") as tmp:
            (tmp / NO_RETAIN).write_text(
                f"No retain model: model.base is {m.base}, and a retain model needs the world "
                "model's own recipe (docs/unlearning.md).\n"
            )
    if m.base is not None and not m.finetune:
        # A given model used as it is: the stage's output only names it.
        with atomic_output_dir(args.out, kind="model-pointer") as tmp:
            write_json(tmp / POINTER, {"model": m.base})
        return 0
    spec = load_world_spec(m.world_spec, list(as_overrides(m.world_overrides)))
    beside = None
    if m.base is None and args.retain:
        beside = _start_retain(args.dataset, args.retain, spec, params.device)
    try:
        meta = pretrain(args.dataset, args.out, spec, base=m.base, device=params.device)
    finally:
        if beside is not None:
            beside.join()
    if beside is not None and beside.exitcode != 0:
        raise KsmithError(
            f"the retain model's training (into {args.retain}) failed with exit code "
            f"{beside.exitcode}; its error is printed above"
        )
    log.info(
        "world model: recall=%s mcq_accuracy=%s train_seconds=%s",
        meta["recall"],
        meta["mcq_accuracy"],
        meta["train_seconds"],
    )
    return 0


NO_RETAIN = "NO_RETAIN_MODEL.txt"


def _start_retain(dataset: str, out: str, spec, device: str):
    """The retain model's training in a second process (spawned: no state shared with this
    one), with this process's torch threads; the caller joins it."""
    import multiprocessing

    import torch

    proc = multiprocessing.get_context("spawn").Process(
        target=_train_retain,
        args=(dataset, out, spec, device, torch.get_num_threads()),
        name="ksmith-retain",
    )
    proc.start()
    log.info("retain model: training into %s in process %s, side by side", out, proc.pid)
    return proc


def _train_retain(dataset: str, out: str, spec, device: str, threads: int) -> None:
    import sys

    from ksmith.cli import set_threads
    from ksmith.world.retain import pretrain_retain

    set_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        pretrain_retain(dataset, out, spec, device=device, progress=False)
    except KsmithError as e:
        print(f"error (retain model): {e}", file=sys.stderr)
        sys.exit(1)


def _code(args: argparse.Namespace) -> int:
    """One fingerprint per method in params' `methods` (see ksmith.methods.source)."""
    from ksmith.io import atomic_output_dir, write_json
    from ksmith.methods import get_method
    from ksmith.methods.source import method_code
    from ksmith.pipeline.params import load_params

    params = load_params(args.params)
    with atomic_output_dir(args.out, kind="method-code") as tmp:
        for name in params.methods:
            write_json(tmp / f"{name}.json", method_code(get_method(name)))
    return 0


NOT_TRAINED = "NOT_TRAINED.txt"


def _editors(args: argparse.Namespace) -> int:
    """out/<method>/: the trained editor of MEND and SERAC (`ksmith train-editor`), a constant
    placeholder for every other method, so each update stage can depend on its own folder."""
    from ksmith.io import atomic_output_dir
    from ksmith.methods.trained.commands import TRAINED_METHODS, train_editor
    from ksmith.pipeline.params import load_params

    params = load_params(args.params)
    model = resolve_model(args.model)
    with atomic_output_dir(args.out, kind="pipeline-editors") as tmp:
        for name in params.methods:
            if name in TRAINED_METHODS:
                train_editor(name, args.dataset, model, tmp / name, device=params.device)
            else:
                (tmp / name).mkdir()
                (tmp / name / NOT_TRAINED).write_text(f"{name} has no trained editor.\n")
    return 0


def _update(args: argparse.Namespace) -> int:
    from ksmith.pipeline.cell_stages import update

    return update(args)


def _evaluate(args: argparse.Namespace) -> int:
    from ksmith.pipeline.cell_stages import evaluate

    return evaluate(args)


def _submit(args: argparse.Namespace) -> int:
    from ksmith.pipeline.cell_stages import submit

    return submit(args)


def _report(args: argparse.Namespace) -> int:
    from ksmith.pipeline.report import write_report
    from ksmith.world.card import read_model_card

    base = None
    if Path(args.params).exists():
        from ksmith.pipeline.params import load_params

        base = load_params(args.params).model.base
    meta = read_model_card(resolve_model(args.model)) if args.model else None
    cells = write_report(args.results, args.out, meta, model_id=model_id(base))
    log.info("report: %d cells -> %s", len(cells), args.out)
    return 0
