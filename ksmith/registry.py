"""One registry, filled by decorators, open to plugins.

Update methods, metrics, backends and name generators register by name. Third parties add their
own through an entry-point group (``[project.entry-points."ksmith.methods"]``). A heavy entry
(vLLM) registers lazily as ``"module:attr"`` so that importing ksmith never imports it.

A plugin usually does both: its module registers the class with the decorator, and its entry
point names that module (``"pkg.module:MyMethod"`` or just ``"pkg.module"``) so ksmith can find
it. The entry point is recorded lazily; importing the module then fills that entry through the
decorator, which is the same registration, not a second one. Two *different* objects under one
name still raise.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from ksmith.errors import KsmithError

T = TypeVar("T")


@dataclass
class _Entry(Generic[T]):
    obj: T | None
    target: str | None  # "module:attr" for lazy entries
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Named objects of one kind (``"method"``, ``"metric"``, ``"backend"`` ...)."""

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, _Entry[T]] = {}
        self._plugins_loaded = False

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator: ``@methods.register("rome", kind="edit")``. Duplicate names raise."""

        def deco(obj: T) -> T:
            self._add(name, _Entry(obj, None, meta))
            return obj

        return deco

    def register_lazy(self, name: str, target: str, **meta: Any) -> None:
        """Register ``"package.module:attr"``, imported only when ``get(name)`` is called."""
        self._add(name, _Entry(None, target, meta))

    def _add(self, name: str, entry: _Entry[T]) -> None:
        old = self._entries.get(name)
        if old is not None and old.meta.get("plugin") and old.obj is None and entry.obj is not None:
            # The plugin's module, imported for its entry point, registering itself.
            old.obj = entry.obj
            old.meta = {**entry.meta, "plugin": True, "entry_point": old.target}
            return
        if old is not None:
            raise KsmithError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = entry

    def _load_plugins(self) -> None:
        if self._plugins_loaded or not self.entry_point_group:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            if ep.name not in self._entries:
                self._entries[ep.name] = _Entry(None, ep.value, {"plugin": True})

    def get(self, name: str) -> T:
        """The object registered as `name`; an unknown name lists the known ones."""
        if name not in self._entries:
            self._load_plugins()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise KsmithError(f"unknown {self.kind} '{name}'; known: {known}")
        entry = self._entries[name]
        if entry.obj is None:
            assert entry.target is not None
            module, _, attr = entry.target.partition(":")
            try:
                obj: Any = importlib.import_module(module)  # may fill `entry` via a decorator
            except ImportError as e:
                where = "entry point" if entry.meta.get("plugin") else "lazy entry"
                raise KsmithError(
                    f"{self.kind} '{name}': cannot import {module} ({where} {entry.target}): {e}"
                ) from e
            if attr or entry.obj is None:
                for part in attr.split(".") if attr else []:
                    obj = getattr(obj, part)
                if entry.obj is not None and entry.obj is not obj:
                    raise KsmithError(
                        f"{self.kind} '{name}': entry point {entry.target} names "
                        f"{obj!r}, but its module registered {entry.obj!r} under that name"
                    )
                entry.obj = obj
        return entry.obj  # type: ignore[return-value]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return dict(self._entries[name].meta)

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
