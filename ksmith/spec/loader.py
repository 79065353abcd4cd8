"""One loader for every spec: YAML in, a validated frozen model out, or errors for people.

`load_spec(path, kind=None)` reads YAML (rejecting duplicate keys, which plain YAML silently
drops), detects the kind (top-level ``kind:`` field, else the folder: graphs/, interventions/,
suites/), validates, and turns every YAML or pydantic problem into a `SpecError` naming the file,
the dotted field path (``relations.diet.range``) and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from ksmith.errors import SpecError
from ksmith.spec.base import SemanticErrors
from ksmith.spec.graph import GraphSpec
from ksmith.spec.intervention import InterventionSpec
from ksmith.spec.suite import SuiteSpec

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


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (two relations with one name, ...)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}'", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file strictly; syntax errors become `SpecError` with line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(f"cannot read: {e.strerror or e}", file=path) from e
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"invalid YAML{where}: {e.problem or e}", file=path) from e
    except yaml.YAMLError as e:
        raise SpecError(f"invalid YAML: {e}", file=path) from e


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


def load_spec(path: str | Path, kind: SpecKind | None = None) -> Any:
    """Read, validate and return a spec (GraphSpec, InterventionSpec or SuiteSpec).

    Raises `SpecError` (a `SpecErrors` listing each problem) naming file and field. A suite's
    referenced files are checked too (see `load_suite` to get them loaded).
    """
    path = Path(path)
    data = read_yaml(path)
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
    if isinstance(spec, SuiteSpec):
        load_suite(path, spec)
    return spec


@dataclass(frozen=True)
class LoadedSuite:
    """A suite with the specs it names, loaded: graphs as (spec, size, path) and interventions."""

    suite: SuiteSpec
    path: Path
    graphs: tuple[tuple[GraphSpec, str, Path], ...]
    interventions: InterventionSpec
    interventions_path: Path


def load_suite(path: str | Path, spec: SuiteSpec | None = None) -> LoadedSuite:
    """Load a suite and every graph/intervention spec it names (paths relative to the suite)."""
    path = Path(path)
    suite = spec if spec is not None else load_spec(path, "suite")
    base = path.parent
    errors: list[SpecError] = []
    graphs = []
    for i, g in enumerate(suite.graphs):
        gpath = base / g.path
        if not gpath.is_file():
            errors.append(
                SpecError(f"no such graph spec file: {gpath}", file=path, field=f"graphs.{i}.path")
            )
            continue
        gspec = load_spec(gpath, "graph")
        if g.size not in gspec.sizes:
            errors.append(
                SpecError(
                    f"unknown size '{g.size}'; {gpath} has {sorted(gspec.sizes)}",
                    file=path,
                    field=f"graphs.{i}.size",
                )
            )
        graphs.append((gspec, g.size, gpath))
    ipath = base / suite.interventions
    ispec = None
    if not ipath.is_file():
        errors.append(
            SpecError(f"no such intervention spec file: {ipath}", file=path, field="interventions")
        )
    else:
        ispec = load_spec(ipath, "intervention")
        for gspec, _, gpath in graphs:
            for j, lv in enumerate(ispec.levels):
                if lv not in gspec.levels:
                    errors.append(
                        SpecError(
                            f"level '{lv}' is not a level of {gpath} ({gspec.levels})",
                            file=ipath,
                            field=f"levels.{j}",
                        )
                    )
    if errors:
        raise SpecErrors(errors)
    assert ispec is not None
    return LoadedSuite(suite, path, tuple(graphs), ispec, ipath)
