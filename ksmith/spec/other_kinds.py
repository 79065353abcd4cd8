"""`ksmith validate` for the spec kinds owned by other packages: method and world-model specs.

- ``specs/methods/<name>.yaml``: validated against method `<name>`'s own ``Params`` model for
  ``params`` and for each ``by_model_type`` block (`ksmith.methods.params.resolve_params`).
- ``specs/world/*.yaml``: validated by `ksmith.world.spec.load_world_spec`.

Each file is first read by the shared safe reader (`ksmith.spec.yamlio`), so size, nesting and
alias bounds hold here too, then handed to its owner's loader.
"""

from __future__ import annotations

from pathlib import Path

from ksmith.errors import KsmithError, SpecError
from ksmith.spec.yamlio import read_yaml

FOLDER_KINDS = {"methods": "method", "world": "world"}


def folder_kind(path: Path, main_kinds: dict[str, str]) -> str | None:
    """'method' or 'world' when the nearest spec folder above `path` is methods/ or world/."""
    for part in reversed(path.resolve().parent.parts):
        if part in FOLDER_KINDS:
            return FOLDER_KINDS[part]
        if part in main_kinds:
            return None
    return None


def validate_method_spec(path: Path) -> str:
    """Check a method spec; returns a summary such as 'method rome v1'."""
    from ksmith.methods import get_method
    from ksmith.methods.params import resolve_params

    data = read_yaml(path)
    try:
        cls = get_method(path.stem)
    except KsmithError as e:
        raise SpecError(f"the file name must be a method name: {e}", file=path) from None
    model_types = [None]
    if isinstance(data, dict) and isinstance(data.get("by_model_type"), dict):
        model_types += sorted(data["by_model_type"], key=str)
    for mt in model_types:
        resolve_params(cls, model_type=mt, specs_dir=_specs_dir_for(path))
    return f"method {cls.name} v{data.get('version')}"


def _specs_dir_for(path: Path) -> Path:
    # resolve_params reads <specs>/methods/<name>.yaml: <specs> is the folder above methods/
    folder = path.resolve().parent
    if folder.name != "methods":
        raise SpecError("a method spec must sit in a folder named methods/", file=path)
    return folder.parent


def validate_world_spec(path: Path) -> str:
    """Check a world-model spec; returns a summary such as 'world v1'."""
    from ksmith.world.spec import load_world_spec

    read_yaml(path)
    spec = load_world_spec(path)
    return f"world v{spec.version}"


def validate_other(path: Path, kind: str) -> str:
    """Validate a method or world spec file (`kind`), raising `SpecError`."""
    if kind == "method":
        return validate_method_spec(path)
    return validate_world_spec(path)
