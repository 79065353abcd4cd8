"""Column buffers for generated rows, and lazy random orders.

Rows are built column-wise (one list per column, appended in lock-step) so a config's probes go
to arrow without per-row dicts or a transpose; `random_order` draws a uniformly random order
one element at a time, so a caller that needs the first few of a long candidate list pays for
those, not for shuffling the whole list.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


class Columns:
    """Named column lists filled in lock-step; `extend` appends another buffer's rows."""

    def __init__(self, names: Sequence[str]):
        self.names = tuple(names)
        self.data: dict[str, list[Any]] = {n: [] for n in self.names}
        self.lists = tuple(self.data[n] for n in self.names)

    def append(self, *values: Any) -> None:
        for col, v in zip(self.lists, values, strict=True):
            col.append(v)

    def extend(self, other: Columns) -> None:
        for col, src in zip(self.lists, other.lists, strict=True):
            col.extend(src)

    def __len__(self) -> int:
        return len(self.lists[0]) if self.lists else 0

    def rows(self) -> list[tuple]:
        """Row tuples (for tests and small tables)."""
        return list(zip(*self.lists, strict=True))


def random_order(items: Sequence[T], rng: random.Random) -> Iterator[T]:
    """`items` in a uniformly random order, drawn lazily (a partial Fisher-Yates shuffle on an
    index list: one random draw per element consumed)."""
    n = len(items)
    idx = list(range(n))
    below = rng._randbelow  # the primitive behind randrange(n) (same stream, no arg checks)
    for i in range(n):
        j = i + below(n - i)
        idx[i], idx[j] = idx[j], idx[i]
        yield items[idx[i]]
