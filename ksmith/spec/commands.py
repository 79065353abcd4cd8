"""CLI: ``ksmith validate PATH...`` and ``ksmith schema [--kind ...]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KINDS = ["graph", "intervention", "suite", "method", "world"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="check spec files (graph, intervention, suite, method, world)",
        description="Validate spec files. The kind comes from a top-level `kind:` field or the "
        "folder (graphs/, interventions/, suites/, methods/, world/). Sizes are computed from "
        "the specs and checked against limits (KSMITH_LIMIT_* variables; docs/specs.md). Exit 0 "
        "if all are valid (warnings are printed), else print every error and exit 2.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="spec files or folders of *.yaml")
    p.add_argument("--kind", choices=KINDS, help="force the kind")
    p.set_defaults(func=cmd_validate)

    s = sub.add_parser("schema", help="print the JSON schema of a spec kind")
    s.add_argument(
        "--kind",
        choices=["graph", "intervention", "suite"],
        default="graph",
        help="which spec kind's schema to print (default: graph)",
    )
    s.set_defaults(func=cmd_schema)


def _expand(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted([*p.rglob("*.yaml"), *p.rglob("*.yml")]))
        else:
            out.append(p)
    return out


def _check(f: Path, kind: str | None) -> tuple[str, list]:
    """Validate one file: (summary, warnings), or raise `SpecError`."""
    from ksmith.spec.loader import FOLDER_KINDS, load_spec, spec_warnings
    from ksmith.spec.other_kinds import folder_kind, validate_other

    other = kind if kind in ("method", "world") else None
    if kind is None:
        other = folder_kind(f, FOLDER_KINDS)
    if other is not None:
        return validate_other(f, other), []
    spec = load_spec(f, kind)
    return f"{spec.kind} v{spec.version}", spec_warnings(f, spec)


def cmd_validate(args: argparse.Namespace) -> int:
    from ksmith.errors import KsmithError
    from ksmith.spec.loader import SpecErrors

    files = _expand(args.paths)
    if not files:
        print("ksmith validate: error: no spec files found", file=sys.stderr)
        return 2
    failed = 0
    for f in files:
        try:
            summary, warnings = _check(f, args.kind)
        except SpecErrors as e:
            failed += 1
            for err in e.errors:
                print(f"error: {err}", file=sys.stderr)
        except KsmithError as e:
            failed += 1
            text = str(e)
            print(f"error: {text if str(f) in text else f'{f}: {text}'}", file=sys.stderr)
        except Exception as e:  # noqa: BLE001 - a validator names the file, never a traceback
            failed += 1
            print(
                f"error: {f}: could not be validated ({type(e).__name__}: {e}); "
                "this is a ksmith bug, please report it",
                file=sys.stderr,
            )
        else:
            for w in warnings:
                print(f"warning: {w}", file=sys.stderr)
            print(f"ok: {f} ({summary})")
    if failed:
        print(f"{failed} of {len(files)} file(s) invalid", file=sys.stderr)
        return 2
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from ksmith.spec.loader import SPEC_MODELS

    schema = SPEC_MODELS[args.kind].model_json_schema()
    print(json.dumps(schema, indent=2, sort_keys=True))
    return 0
