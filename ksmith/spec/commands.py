"""CLI: ``ksmith validate PATH...`` and ``ksmith schema [--kind ...]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="check spec files (graph, intervention, suite)",
        description="Validate spec files. The kind comes from a top-level `kind:` field or the "
        "folder (graphs/, interventions/, suites/). Exit 0 if all are valid, else print every "
        "error and exit 2.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="spec files or folders of *.yaml")
    p.add_argument("--kind", choices=["graph", "intervention", "suite"], help="force the kind")
    p.set_defaults(func=cmd_validate)

    s = sub.add_parser("schema", help="print the JSON schema of a spec kind")
    s.add_argument("--kind", choices=["graph", "intervention", "suite"], default="graph")
    s.set_defaults(func=cmd_schema)


def _expand(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted([*p.rglob("*.yaml"), *p.rglob("*.yml")]))
        else:
            out.append(p)
    return out


def cmd_validate(args: argparse.Namespace) -> int:
    from ksmith.errors import SpecError
    from ksmith.spec.loader import SpecErrors, load_spec

    files = _expand(args.paths)
    if not files:
        print("ksmith validate: error: no spec files found", file=sys.stderr)
        return 2
    failed = 0
    for f in files:
        try:
            spec = load_spec(f, args.kind)
        except SpecErrors as e:
            failed += 1
            for err in e.errors:
                print(f"error: {err}", file=sys.stderr)
        except SpecError as e:
            failed += 1
            print(f"error: {e}", file=sys.stderr)
        else:
            print(f"ok: {f} ({spec.kind} v{spec.version})")
    if failed:
        print(f"{failed} of {len(files)} file(s) invalid", file=sys.stderr)
        return 2
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from ksmith.spec.loader import SPEC_MODELS

    schema = SPEC_MODELS[args.kind].model_json_schema()
    print(json.dumps(schema, indent=2, sort_keys=True))
    return 0
