"""Column buffers for generated rows, and lazy random orders.

Rows are built column-wise (one list per column, appended in lock-step) so a config's probes go
to arrow without per-row dicts or a transpose; `random_order` draws a uniformly random order
one element at a time, so a caller that needs the first few of a long candidate list pays for
those, not for shuffling the whole list.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


class Columns:
    """Named column lists filled in lock-step; `extend` appends another buffer's rows."""

    def __init__(self, names: Sequence[str]):
        self.names = tuple(names)
        self.data: dict[str, list[Any]] = {n: [] for n in self.names}
        self.lists = tuple(self.data[n] for n in self.names)

    @classmethod
    def of(cls, names: Sequence[str], lists: Sequence[list[Any]]) -> Columns:
        """Columns over existing lists (taken, not copied)."""
        cols = cls(())
        cols.names = tuple(names)
        cols.data = dict(zip(cols.names, lists, strict=True))
        cols.lists = tuple(cols.data[n] for n in cols.names)
        return cols

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


class Draws:
    """Seeded draws for the probe generator: uniform integers, shuffles and lazy orders, all
    from one `random.Random` through its C-level `random()` (``floor(random() * n)``: for the
    n used here the bias is below 1e-9, and a draw costs a tenth of `randrange`)."""

    def __init__(self, seed: int):
        self._random = random.Random(seed).random

    def below(self, n: int) -> int:
        """A uniform integer in [0, n)."""
        return int(self._random() * n)

    def shuffle(self, x: list) -> None:
        """Shuffle `x` in place (Fisher-Yates)."""
        rand = self._random
        for i in range(len(x) - 1, 0, -1):
            j = int(rand() * (i + 1))
            x[i], x[j] = x[j], x[i]


def random_order(items: Sequence[T], below: Callable[[int], int]) -> Iterator[T]:
    """`items` in a uniformly random order, drawn lazily: a Fisher-Yates shuffle run one step
    per element consumed, its swaps kept in a dict (O(consumed) time and memory). `below(n)`
    draws a uniform integer in [0, n) (`Draws.below`, or `random.Random()._randbelow`)."""
    n = len(items)
    moved: dict[int, int] = {}  # position -> index of the item now there (if swapped)
    for i in range(n):
        j = i + below(n - i)
        pick = moved.get(j, j)
        moved[j] = moved.get(i, i)
        yield items[pick]
