"""Stop strings for greedy generation: cut a text at the first one, stop a batch row at it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import StoppingCriteria


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to (not including) the earliest stop string."""
    end = len(text)
    for s in stop:
        if s:
            pos = text.find(s)
            if pos != -1:
                end = min(end, pos)
    return text[:end]


class StopOnStrings(StoppingCriteria):
    """Stopping criterion: a row is done once its new text (the tokens after column `start`)
    holds a stop string or, with ``words[row]`` set, more than that many whitespace-separated
    words: its first ``words[row]`` words are then final, since a later token only appends
    (at most joining the last word)."""

    def __init__(
        self,
        decode: Callable[[list[int]], str],
        start: int,
        stop: tuple[str, ...],
        words: Sequence[int | None] | None = None,
    ):
        super().__init__()
        self.decode = decode  # new token ids -> text (cut at EOS)
        self.start = start
        self.stop = tuple(s for s in stop if s)
        self.words = list(words) if words is not None else None
        self.done: list[bool] = []  # per row; a row once done stays done (its text only grows)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        rows = input_ids.shape[0]
        if len(self.done) != rows:
            self.done = [False] * rows
        words = self.words if self.words is not None else [None] * rows
        if len(words) != rows:
            raise ValueError(f"{len(words)} word limits for a batch of {rows} rows")
        if self.stop or any(n is not None for n in words):
            new = input_ids[:, self.start :]
            for row, done in enumerate(self.done):
                if not done:
                    text = self.decode(new[row].tolist())
                    n = words[row]
                    self.done[row] = any(s in text for s in self.stop) or (
                        n is not None and len(text.split()) > n
                    )
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)
