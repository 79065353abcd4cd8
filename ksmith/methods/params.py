"""Method hyper-parameters: code defaults < the method's spec file < ``--set`` overrides.

The spec file is the first that exists of: ``<--specs-dir or $KSMITH_SPECS_DIR>/methods/<name>.yaml``
(a project's own choice), ``<name>.yaml`` next to the method's module (how a plugin package ships
its defaults), and ksmith's ``specs/methods/<name>.yaml`` (the built-ins' defaults).

A method spec file is thin, versioned YAML::

    version: 1
    params:              # applies to every model
      lr: 0.001
      steps: 40
    by_model_type:       # keyed by config.model_type (never by model name)
      gpt2:
        lr: 0.002

Precedence, lowest first: the pydantic defaults of the method's ``Params``, ``params:``,
``by_model_type[<model_type>]``, then each ``--set key=value`` (value parsed as a YAML scalar or
list: ``--set layers=[1,2]``, ``--set norm_constraint=null``). The result is validated by the
``Params`` model; an error names the file (or ``--set``) and the field.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ksmith.errors import SpecError
from ksmith.methods.base import MethodParams, UpdateMethod
from ksmith.spec.yamlio import load_yaml, read_yaml

log = logging.getLogger(__name__)

SPEC_VERSION = 1
_TOP_KEYS = {"version", "params", "by_model_type", "description"}
SPECS_ENV = "KSMITH_SPECS_DIR"


def default_specs_dir() -> Path | None:
    """The ``specs`` folder: ``$KSMITH_SPECS_DIR``, else next to the package (a source checkout
    or editable install: ``<repo>/specs``), else inside it (``ksmith/specs``), else
    ``./specs``. None if none exists."""
    import ksmith

    env = os.environ.get(SPECS_ENV)
    if env:
        return Path(env)
    pkg = Path(ksmith.__file__).resolve().parent
    for cand in (pkg.parent / "specs", pkg / "specs", Path.cwd() / "specs"):
        if (cand / "methods").is_dir():
            return cand
    return None


def shipped_spec_path(method_cls: type[UpdateMethod]) -> Path | None:
    """``<name>.yaml`` next to the module defining `method_cls` (a plugin's own defaults)."""
    import inspect

    try:
        module_file = inspect.getsourcefile(method_cls)
    except TypeError:  # defined in __main__ or a REPL: no module file
        return None
    if module_file is None:
        return None
    path = Path(module_file).resolve().parent / f"{method_cls.name}.yaml"
    return path if path.is_file() else None


def method_spec_path(
    name: str,
    specs_dir: str | Path | None = None,
    *,
    method_cls: type[UpdateMethod] | None = None,
) -> Path | None:
    """The spec file for method `name`, or None (see the module docstring for the order)."""
    explicit = Path(specs_dir) if specs_dir is not None else None
    if explicit is None and os.environ.get(SPECS_ENV):
        explicit = Path(os.environ[SPECS_ENV])
    candidates = [explicit / "methods" / f"{name}.yaml"] if explicit is not None else []
    shipped = shipped_spec_path(method_cls) if method_cls is not None else None
    if shipped is not None:
        candidates.append(shipped)
    root = default_specs_dir() if explicit is None else None
    if root is not None:
        candidates.append(root / "methods" / f"{name}.yaml")
    return next((p for p in candidates if p.is_file()), None)


def parse_override(item: str) -> tuple[str, Any]:
    """``"key=value"`` -> (key, YAML-parsed value)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(f"expected key=value, got {item!r}", file="--set")
    try:
        value = load_yaml(raw, "--set") if raw.strip() else ""
    except SpecError as e:
        raise SpecError(f"value {raw!r} is not valid YAML: {e}", file="--set", field=key) from None
    return key, value


def _load_spec_file(path: Path) -> dict[str, Any]:
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise SpecError("expected a mapping at the top level", file=path)
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise SpecError(
            f"unknown top-level key(s) {unknown}; expected {sorted(_TOP_KEYS)}",
            file=path,
            field=unknown[0],
        )
    if data.get("version") != SPEC_VERSION:
        raise SpecError(
            f"expected version: {SPEC_VERSION}, got {data.get('version')!r}",
            file=path,
            field="version",
        )
    for key in ("params", "by_model_type"):
        if not isinstance(data.get(key) or {}, dict):
            raise SpecError("expected a mapping", file=path, field=key)
    for mt, block in (data.get("by_model_type") or {}).items():
        if not isinstance(block, dict):
            raise SpecError("expected a mapping", file=path, field=f"by_model_type.{mt}")
    return data


def resolve_params(
    method_cls: type[UpdateMethod],
    *,
    model_type: str | None,
    overrides: Sequence[str] = (),
    specs_dir: str | Path | None = None,
    num_layers: int | None = None,
) -> MethodParams:
    """The method's validated hyper-parameters (see the module docstring for precedence).

    With `num_layers` (``config.num_hidden_layers``), layer fields are checked against the
    model's depth too (``ksmith.methods.layers``)."""
    from ksmith.methods.layers import check_layers

    values, sources = resolve_param_values(
        method_cls, model_type=model_type, overrides=overrides, specs_dir=specs_dir
    )
    params = validate_params(method_cls, values, sources)
    check_layers(method_cls.name, params, num_layers, sources)
    return params


def resolve_param_values(
    method_cls: type[UpdateMethod],
    *,
    model_type: str | None,
    overrides: Sequence[str] = (),
    specs_dir: str | Path | None = None,
) -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
    """Merged raw values (before validation) and, per key, where it came from: (file, field)."""
    values: dict[str, Any] = {}
    sources: dict[str, tuple[str, str]] = {}
    path = method_spec_path(method_cls.name, specs_dir, method_cls=method_cls)
    if path is None:
        log.info("no spec file for method %s found; using code defaults", method_cls.name)
    else:
        data = _load_spec_file(path)
        layers = [("params", data.get("params") or {})]
        if model_type is not None:
            block = (data.get("by_model_type") or {}).get(model_type) or {}
            layers.append((f"by_model_type.{model_type}", block))
        for prefix, block in layers:
            for key, value in block.items():
                values[str(key)] = value
                sources[str(key)] = (str(path), f"{prefix}.{key}")
    for item in overrides:
        key, value = parse_override(item)
        values[key] = value
        sources[key] = ("--set", key)
    return values, sources


def validate_params(
    method_cls: type[UpdateMethod],
    values: dict[str, Any],
    sources: dict[str, tuple[str, str]] | None = None,
) -> MethodParams:
    """``method_cls.Params(**values)``, with errors naming where each bad value came from."""
    sources = sources or {}
    try:
        return method_cls.Params(**values)
    except ValidationError as e:
        err = e.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else ""
        file, field = sources.get(key, (f"{method_cls.name} defaults", key))
        if err["type"] == "extra_forbidden":
            known = ", ".join(sorted(method_cls.Params.model_fields))
            msg = f"unknown parameter {key!r} for method '{method_cls.name}'; known: {known}"
        else:
            where = ".".join(str(x) for x in err["loc"])
            msg = f"{where}: {err['msg']} (got {err.get('input')!r})"
        raise SpecError(msg, file=file, field=field) from e
