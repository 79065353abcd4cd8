"""Facts and nodes of a world, and the lazy sequence that materializes facts from the closure
table on access (a large world has millions of rows; most are never looked at as objects)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ksmith.graph.world import World


@dataclass(frozen=True, slots=True)
class Node:
    """An entity: a hierarchy node (level, node type, parent) or a value (level None)."""

    name: str
    level: str | None  # None for values of a value type
    type: str  # node type for hierarchy nodes, value-type name for values
    parent: str | None


@dataclass(frozen=True, slots=True)
class Fact:
    """(subject, relation, object) with its derivation: support, hop count and rule."""

    id: str
    subject: str
    relation: str
    object: str
    base: bool
    support: frozenset[str]  # base fact ids it rests on ({id} for a base fact)
    hops: int  # 0 for base; number of rule applications otherwise
    rule: str  # "" | "inherit" | "inverse" | "symmetric" | "compose:<rule name>"

    @property
    def triple(self) -> tuple[str, str, str]:
        return (self.subject, self.relation, self.object)


CHUNK = 1 << 16


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Run a block of allocation-heavy, acyclic work over a built world without GC passes.

    A built world and its indexes are millions of long-lived containers, and probe and corpus
    generation make millions of short-lived acyclic ones (tuples, lists, strings; freed by
    reference counting): every collection they trigger would rescan the world. The objects
    alive on entry are frozen out of collection (`gc.freeze`) and automatic collection is off
    until the block ends.
    """
    enabled = gc.isenabled()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()


class FactView(Sequence[Fact]):
    """A read-only, lazily materialized sequence of a world's facts (rows [start, stop))."""

    def __init__(self, world: World, start: int, stop: int):
        self._world, self._start, self._stop = world, start, stop

    def __len__(self) -> int:
        return self._stop - self._start

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return tuple(self[j] for j in range(*i.indices(len(self))))
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("fact index out of range")
        return self._world._fact(self._start + i)

    def __iter__(self) -> Iterator[Fact]:
        fact = self._world._fact
        for lo in range(self._start, self._stop, CHUNK):
            with no_gc():  # materialize a chunk without GC passes over the growing heap
                chunk = [fact(i) for i in range(lo, min(lo + CHUNK, self._stop))]
            yield from chunk

    def __repr__(self) -> str:
        return f"<{len(self)} facts>"
