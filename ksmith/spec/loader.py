"""One loader for every spec: YAML in, a validated frozen model out, or errors for people.

`load_spec(path, kind=None)` reads YAML with the shared safe reader (`ksmith.spec.yamlio`:
duplicate keys, nesting, alias expansion, binary or non-UTF-8 files are refused), detects the kind (top-level ``kind:`` field, else the folder: graphs/, interventions/,
suites/), validates, and turns every YAML or pydantic problem into a `SpecError` naming the file,
the dotted field path (``relations.diet.range``) and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from ksmith.errors import SpecError
from ksmith.spec.base import SemanticErrors
from ksmith.spec.graph import GraphSpec
from ksmith.spec.graph_semantics import graph_warnings
from ksmith.spec.intervention import InterventionSpec
from ksmith.spec.limits import Limits, limits
from ksmith.spec.load_checks import graph_limit_errors, suite_errors, suite_path_issues
from ksmith.spec.suite import SuiteSpec
from ksmith.spec.yamlio import read_yaml

SpecKind = Literal["graph", "intervention", "suite"]
SPEC_MODELS: dict[str, type[BaseModel]] = {
    "graph": GraphSpec,
    "intervention": InterventionSpec,
    "suite": SuiteSpec,
}
RULE_TAGS = ("compose", "inherit", "symmetric", "inverse")
FOLDER_KINDS = {"graphs": "graph", "interventions": "intervention", "suites": "suite"}


class SpecErrors(SpecError):
    """Several problems in one spec file; `errors` holds each as its own `SpecError`."""

    def __init__(self, errors: list[SpecError]):
        self.errors = errors
        first = errors[0]
        super().__init__(first.message, file=first.file, field=first.field)
        self.args = ("\n".join(str(e) for e in errors),)

    def __str__(self) -> str:
        return self.args[0]


def _dotted(loc: tuple[Any, ...]) -> str:
    # a discriminated union (rules) adds the tag to the location: rules.0.compose.premises
    parts = [
        str(p)
        for i, p in enumerate(loc)
        if not (i >= 2 and loc[i - 2] == "rules" and isinstance(loc[i - 1], int) and p in RULE_TAGS)
    ]
    return ".".join(parts)


def _explain(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{err['loc'][-1]}' (not a field here; see `ksmith schema`)"
    if kind == "missing":
        return "required field is missing"
    got = err.get("input")
    shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
    return f"{err['msg']} (got {shown[:80]})"


def errors_from_validation(e: ValidationError, file: str | Path | None) -> list[SpecError]:
    """One `SpecError` per pydantic error, semantic errors unpacked to their own fields."""
    out: list[SpecError] = []
    for err in e.errors():
        ctx = err.get("ctx") or {}
        inner = ctx.get("error")
        if isinstance(inner, SemanticErrors):
            prefix = _dotted(err["loc"])
            for field, msg in inner.items:
                full = f"{prefix}.{field}" if prefix else field
                out.append(SpecError(msg, file=file, field=full))
            continue
        out.append(SpecError(_explain(err), file=file, field=_dotted(err["loc"]) or None))
    return out


def detect_kind(path: str | Path, data: Any) -> str:
    """The spec kind of a parsed file: its ``kind:`` field, else its folder name."""
    path = Path(path)
    if isinstance(data, dict) and "kind" in data:
        k = data["kind"]
        if k not in SPEC_MODELS:
            raise SpecError(
                f"unknown spec kind {k!r}; expected one of {sorted(SPEC_MODELS)}",
                file=path,
                field="kind",
            )
        return k
    for part in reversed(path.resolve().parent.parts):
        if part in FOLDER_KINDS:
            return FOLDER_KINDS[part]
    raise SpecError(
        "cannot tell the spec kind: add a top-level `kind: graph|intervention|suite` or keep the "
        "file under specs/graphs, specs/interventions or specs/suites",
        file=path,
        field="kind",
    )


def validate_data(data: Any, kind: str, file: str | Path | None = None) -> BaseModel:
    """Validate already-parsed data as a spec of `kind`, raising `SpecErrors`."""
    if kind not in SPEC_MODELS:
        raise SpecError(
            f"unknown spec kind {kind!r}; expected one of {sorted(SPEC_MODELS)}", file=file
        )
    if not isinstance(data, dict):
        raise SpecError(
            f"expected a mapping at the top level, got {type(data).__name__}", file=file
        )
    try:
        return SPEC_MODELS[kind].model_validate(data)
    except ValidationError as e:
        raise SpecErrors(errors_from_validation(e, file)) from None


def _load_one(path: Path, kind: SpecKind | None, bounds: Limits) -> Any:
    """Read and validate one file (a suite's files are not opened)."""
    data = read_yaml(path, bounds)
    if not isinstance(data, dict):
        raise SpecError(
            f"expected a mapping at the top level, got {type(data).__name__}", file=path
        )
    if kind is None or "kind" in data:
        found = detect_kind(path, data)
        if kind is not None and found != kind:
            raise SpecError(
                f"expected a {kind} spec, found kind {found!r}", file=path, field="kind"
            )
        kind = found  # type: ignore[assignment]
    spec = validate_data(data, kind, path)
    if isinstance(spec, GraphSpec):
        errors = graph_limit_errors(spec, path, bounds)
        if errors:
            raise SpecErrors(errors)
    return spec


def load_spec(path: str | Path, kind: SpecKind | None = None) -> Any:
    """Read, validate and return a spec (GraphSpec, InterventionSpec or SuiteSpec).

    Raises `SpecError` (a `SpecErrors` listing each problem) naming file and field. A graph's
    size presets are checked against `ksmith.spec.limits`; a suite's referenced files are
    checked too (see `load_suite` to get them loaded).
    """
    path = Path(path)
    spec = _load_one(path, kind, limits())
    if isinstance(spec, SuiteSpec):
        load_suite(path, spec)
    return spec


def spec_warnings(path: str | Path, spec: Any) -> list[SpecError]:
    """What a valid spec may mean by mistake (printed by `ksmith validate`, never fatal)."""
    if isinstance(spec, GraphSpec):
        return [SpecError(m, file=path, field=f) for f, m in graph_warnings(spec)]
    if isinstance(spec, SuiteSpec):
        return list(load_suite(path, spec).warnings)
    return []


@dataclass(frozen=True)
class LoadedSuite:
    """A suite with the specs it names, loaded: graphs as (spec, size, path) and interventions."""

    suite: SuiteSpec
    path: Path
    graphs: tuple[tuple[GraphSpec, str, Path], ...]
    interventions: InterventionSpec
    interventions_path: Path
    warnings: tuple[SpecError, ...] = ()  # valid, but maybe not what was meant


def _referenced(path: Path, field: str, target: Path, kind: SpecKind, bounds: Limits) -> Any:
    """Load a file a suite names; its errors come after one naming the suite's field."""
    try:
        return _load_one(target, kind, bounds)
    except SpecError as e:
        inner = e.errors if isinstance(e, SpecErrors) else [e]
        head = SpecError(f"{kind} spec {target} is invalid (errors below)", file=path, field=field)
        raise SpecErrors([head, *inner]) from None


def load_suite(path: str | Path, spec: SuiteSpec | None = None) -> LoadedSuite:
    """Load a suite and every graph/intervention spec it names (paths relative to the suite).

    Besides each file's own checks: paths stay in the suite's spec folder, one graph per
    domain, every scale can be supplied by its level, MCQ ranges have enough entities, and the
    suite's size is within `ksmith.spec.limits` (`ksmith.spec.load_checks`).
    """
    path = Path(path)
    bounds = limits()
    suite = spec if spec is not None else _load_one(path, "suite", bounds)
    base = path.parent
    errors, path_warnings = suite_path_issues(path, suite)
    warnings: list[SpecError] = []
    if errors:
        raise SpecErrors(errors)
    graphs = []
    for i, g in enumerate(suite.graphs):
        gpath = base / g.path
        field = f"graphs.{i}.path"
        if not gpath.is_file():
            errors.append(SpecError(f"no such graph spec file: {gpath}", file=path, field=field))
            continue
        try:
            gspec = _referenced(path, field, gpath, "graph", bounds)
        except SpecErrors as e:
            errors.extend(e.errors)
            continue
        if g.size not in gspec.sizes:
            errors.append(
                SpecError(
                    f"unknown size '{g.size}'; {gpath} has {sorted(gspec.sizes)}",
                    file=path,
                    field=f"graphs.{i}.size",
                )
            )
            continue
        graphs.append((i, gspec, g.size, gpath))
    ipath = base / suite.interventions
    ispec = None
    if not ipath.is_file():
        errors.append(
            SpecError(f"no such intervention spec file: {ipath}", file=path, field="interventions")
        )
    else:
        try:
            ispec = _referenced(path, "interventions", ipath, "intervention", bounds)
        except SpecErrors as e:
            errors.extend(e.errors)
    if ispec is not None:
        for _, gspec, _, gpath in graphs:
            for j, lv in enumerate(ispec.levels):
                if lv not in gspec.levels:
                    errors.append(
                        SpecError(
                            f"level '{lv}' is not a level of {gpath} ({gspec.levels})",
                            file=ipath,
                            field=f"levels.{j}",
                        )
                    )
        if not errors:
            more, warnings = suite_errors(path, suite.name, graphs, ispec, ipath, bounds)
            errors.extend(more)
    if errors:
        raise SpecErrors(errors)
    assert ispec is not None
    loaded = tuple((g, size, gpath) for _, g, size, gpath in graphs)
    return LoadedSuite(suite, path, loaded, ispec, ipath, (*path_warnings, *warnings))
