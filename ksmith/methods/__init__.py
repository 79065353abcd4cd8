"""Update methods: editing and unlearning under one objective (see base.py).

`import ksmith.methods` is light (no torch): the contract types are imported eagerly, the
torch-based helpers (runner, artifacts, training utilities) on first attribute access, and the
built-in methods by `load_builtin_methods()` (called by `get_method` and the CLI).
"""

from __future__ import annotations

import importlib
from typing import Any

from ksmith.methods.base import (
    METHODS,
    MethodParams,
    Request,
    TextPair,
    UpdateMethod,
    UpdateProblem,
    UpdateResult,
    register_method,
)

# Modules whose import registers the built-in methods. A listed module that is missing is an
# error (ImportError), never silently skipped.
_BUILTIN: tuple[str, ...] = (
    "ksmith.methods.ft",
    "ksmith.methods.lora",
    "ksmith.methods.adalora",
    "ksmith.methods.ice",
    "ksmith.methods.rome",
    "ksmith.methods.memit",
    "ksmith.methods.alphaedit",
    "ksmith.methods.grace",
    "ksmith.methods.wise",
    "ksmith.methods.serac",
    "ksmith.methods.mend",
    "ksmith.methods.unlearn",
)


def load_builtin_methods() -> None:
    """Import every built-in method module (idempotent)."""
    for name in _BUILTIN:
        importlib.import_module(name)


def get_method(name: str) -> type[UpdateMethod]:
    """The method class registered as `name` (built-ins and plugins); an unknown name raises
    a KsmithError listing the known ones."""
    load_builtin_methods()
    return METHODS.get(name)


# Public names served lazily: name -> module.
_LAZY = {
    "run_update": "ksmith.methods.runner",
    "UpdateSpec": "ksmith.methods.runner",
    "read_update": "ksmith.methods.artifacts",
    "applied_update": "ksmith.methods.artifacts",
    "read_prefixes": "ksmith.methods.artifacts",
    "resolve_params": "ksmith.methods.params",
    "build_problems": "ksmith.methods.problem",
    "update_from_dataset": "ksmith.methods.commands",
    "UpdateRun": "ksmith.methods.commands",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ksmith.methods' has no attribute {name!r}")


__all__ = [
    "METHODS",
    "MethodParams",
    "Request",
    "TextPair",
    "UpdateMethod",
    "UpdateProblem",
    "UpdateResult",
    "get_method",
    "load_builtin_methods",
    "register_method",
    *_LAZY,
]
