"""Shared base for every spec model: frozen, no unknown keys, a description on each field."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SpecModel(BaseModel):
    """Base of all ksmith specs (STYLE.md 2): immutable and strict about unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class SemanticErrors(ValueError):
    """Cross-field problems found after type validation.

    Carries `(dotted field path, message)` pairs so the loader can report each one with its own
    field, instead of pydantic's single model-level location.
    """

    def __init__(self, items: list[tuple[str, str]]):
        self.items = items
        super().__init__("; ".join(f"{f}: {m}" for f, m in items))
