"""CLI: `ksmith submit`, `ksmith leaderboard verify`, `ksmith leaderboard build`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_ROOT = "leaderboard"


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--root", default=DEFAULT_ROOT, help="leaderboard folder (default: ./leaderboard)"
    )
    p.add_argument(
        "--datasets",
        nargs="+",
        default=[],
        metavar="DIR",
        help="released dataset folders to verify against (found by their card's fingerprint); "
        "others are regenerated from ROOT/datasets.yaml",
    )
    p.add_argument(
        "--cache",
        default=None,
        metavar="DIR",
        help="where datasets from datasets.yaml are regenerated (default ~/.cache/ksmith/datasets)",
    )


def _add_audit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models",
        nargs="+",
        default=[],
        metavar="DIR",
        help="world-model folders to re-execute on (found by fingerprint, e.g. out/model); "
        "others are regenerated from ROOT/models.yaml",
    )
    p.add_argument(
        "--editors",
        nargs="+",
        default=[],
        metavar="DIR",
        help="trained-editor folders for SERAC and MEND submissions (each DIR or DIR/<method>, "
        "e.g. out/editors), used when one has the submission's method.editor fingerprint; "
        "otherwise the editor is trained again from the recorded settings",
    )
    p.add_argument(
        "--model-cache",
        default=None,
        metavar="DIR",
        help="where world models from models.yaml are regenerated (default ~/.cache/ksmith/models)",
    )
    p.add_argument(
        "--audit-seed",
        type=int,
        default=None,
        help="seed of the audit sample (default: a fresh one, printed, so submitters cannot "
        "know which rows are audited)",
    )
    p.add_argument(
        "--audit-all", action="store_true", help="re-score every row instead of a sample"
    )


def _audits(args: argparse.Namespace, folders: list[Path], root: Path) -> list:
    """Verify, then re-execute, each folder: (verified, record or None, note) per folder;
    one KsmithError listing every submission that failed."""
    from ksmith.errors import KsmithError
    from ksmith.leaderboard.audit import AuditOptions, NotReexecutable, audit_submission
    from ksmith.leaderboard.models import REGISTRY_FILE, ModelResolver
    from ksmith.leaderboard.verify import verify_folders

    resolver = _resolver(args)
    verified = verify_folders(folders, resolver, root / "submissions")
    models = ModelResolver(
        args.models,
        registry=root / REGISTRY_FILE,
        cache_dir=args.model_cache,
        datasets=resolver,
    )
    options = AuditOptions(seed=args.audit_seed, full=args.audit_all)
    out, errors = [], []
    for v in verified:
        dataset = resolver.resolve(v.submission.dataset.fingerprint)
        try:
            record = audit_submission(
                v, dataset, models, options, editors=[Path(e) for e in args.editors]
            )
        except NotReexecutable as e:
            out.append((v, None, str(e)))
            continue
        except KsmithError as e:
            errors.append(str(e))
            continue
        out.append((v, record, ""))
    if errors:
        raise KsmithError(f"{len(errors)} submission(s) failed re-execution:\n" + "\n".join(errors))
    return out


def _print_audits(results: list) -> None:
    for v, record, note in results:
        if record is None:
            print(f"ok {v.submission.id}: predictions checked, not re-executed ({note})")
        else:
            print(
                f"ok {v.submission.id}: re-executed ({record.source}), {record.audited} of "
                f"{record.rows} rows agree ({record.ties} up to float ties); audit seed "
                f"{record.seed}"
            )


def _audit(args: argparse.Namespace) -> int:
    from ksmith.leaderboard.records import write_record
    from ksmith.leaderboard.verify import submission_folders

    root = _board_root(args)
    folders = [Path(p) for p in args.paths] or submission_folders(root / "submissions")
    results = _audits(args, folders, root)
    _print_audits(results)
    for _v, record, _note in results:  # only once every submission passed
        if record is not None:
            print(f"wrote {write_record(root, record)}")
    if not results:
        print("no submissions to audit")
    return 0


def _board_root(args: argparse.Namespace) -> Path:
    """The --root folder, which must be a leaderboard (it holds `submissions/`): a mistyped
    root is an error, never an empty board."""
    from ksmith.errors import KsmithError

    root = Path(args.root)
    if not (root / "submissions").is_dir() or (root / "submissions").is_symlink():
        raise KsmithError(
            f"{root}: not a leaderboard folder (no submissions/ folder); pass --root with the "
            "board's folder"
        )
    return root


def _resolver(args: argparse.Namespace):
    from ksmith.leaderboard.datasets import DatasetResolver

    root = Path(args.root)
    return DatasetResolver(args.datasets, registry=root / "datasets.yaml", cache_dir=args.cache)


def _submit(args: argparse.Namespace) -> int:
    from ksmith.leaderboard.submit import SubmitOptions, write_submission

    options = SubmitOptions(
        method_url=args.method_url,
        method_version=args.method_version or "",
        dataset=args.dataset,
        model_id=args.model_id,
        model_revision=args.model_revision,
        with_updates=args.with_updates,
        retain=args.retain,
    )
    sub = write_submission(args.results, args.out, options)
    print(f"{args.out}: submission '{sub.id}' with {len(sub.cells)} cell(s)")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ksmith.leaderboard.verify import submission_folders, verify_all

    root = Path(args.root) if args.paths else _board_root(args)
    folders = [Path(p) for p in args.paths] or submission_folders(root / "submissions")
    if args.reexecute:
        _print_audits(_audits(args, folders, root))
        return 0
    subs = verify_all(folders, _resolver(args), board_dir=root / "submissions")
    for sub in subs:
        print(f"ok {sub.id}: {len(sub.cells)} cell(s) recomputed and matching")
    if not subs:
        print("no submissions to verify")
    return 0


def _build(args: argparse.Namespace) -> int:
    from ksmith.leaderboard.build import BoardPaths, build_board

    root = _board_root(args)
    changed = build_board(BoardPaths(root), _resolver(args), check=args.check)
    if args.check:
        if changed:
            print(
                f"{root}: out of date: {', '.join(changed)}; run `ksmith leaderboard build`",
                file=sys.stderr,
            )
            return 1
        print(f"{root}: up to date")
        return 0
    print(f"{root}: {'updated ' + ', '.join(changed) if changed else 'already up to date'}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "submit",
        help="build a leaderboard submission from evaluation results folders",
        description="Collect the results folders (ksmith evaluate outputs) of ONE method into "
        "leaderboard/submissions/<id> (id = the --out folder name): submission.yaml with the "
        "metadata and every cell's metrics, and predictions.parquet with every prediction.",
    )
    p.add_argument("results", nargs="+", metavar="RESULTS_DIR", help="ksmith evaluate outputs")
    p.add_argument("--out", required=True, help="leaderboard/submissions/<id>")
    p.add_argument("--method-url", default=None, help="paper or code URL of the method")
    p.add_argument("--method-version", default=None, help="version of the method")
    p.add_argument(
        "--dataset",
        default=None,
        metavar="DIR",
        help="the evaluated dataset folder (suite name, fingerprint cross-check)",
    )
    p.add_argument(
        "--model-id",
        default=None,
        help="public id of the model (default: the path eval.json records)",
    )
    p.add_argument("--model-revision", default=None, help="Hub revision of the model")
    p.add_argument(
        "--with-updates",
        action="store_true",
        help="copy each cell's update artifacts (weight deltas or prefixes) into the submission "
        "so the board can re-execute it without running the method",
    )
    p.add_argument(
        "--retain",
        default=None,
        help="the retain model's evaluation folders (the pipeline's out/retain-results): "
        "unlearn cells measured against the retain model carry its per-item rows, so verify "
        "recomputes forget quality, retain agreement and the rest",
    )
    p.set_defaults(func=_submit)

    lb = subparsers.add_parser("leaderboard", help="verify submissions and build the leaderboard")
    sub = lb.add_subparsers(dest="leaderboard_command", metavar="ACTION")
    v = sub.add_parser(
        "verify",
        help="recompute every number of submissions from their predictions",
        description="Check schema, dataset fingerprint, cells, and recompute every flag and "
        "metric from the predictions against the dataset's expected answers. Read-only.",
    )
    v.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="submission folders (default: every folder under ROOT/submissions)",
    )
    v.add_argument(
        "--reexecute",
        action="store_true",
        help="also re-execute each submission on its world model (ksmith.leaderboard.audit): "
        "regenerate the model, remake the update, re-score an audit sample; writes nothing",
    )
    _add_dataset_args(v)
    _add_audit_args(v)
    v.set_defaults(func=_verify)
    a = sub.add_parser(
        "audit",
        help="re-execute submissions on their world model and record the audit on the board",
        description="Verify, then re-execute, each submission: its world model is found or "
        "regenerated by fingerprint (ROOT/models.yaml), each audited group's update is applied "
        "from the artifacts the submission carries or made again with the claimed method, "
        "parameters and seed, and a sample of rows (688: a lie about 1%% of rows is caught with "
        "probability 0.999) is scored again and compared. Writes ROOT/audits/<id>.json for "
        "each submission once all pass; `build` shows those submissions as re-executed.",
    )
    a.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="submission folders (default: every folder under ROOT/submissions)",
    )
    _add_dataset_args(a)
    _add_audit_args(a)
    a.set_defaults(func=_audit)
    b = sub.add_parser(
        "build",
        help="render README.md, leaderboard.csv and index.html from verified submissions",
    )
    b.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the built files are not up to date",
    )
    _add_dataset_args(b)
    b.set_defaults(func=_build)
