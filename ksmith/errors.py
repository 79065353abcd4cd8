"""Errors meant for people: each says which file, which field, and what was expected."""

from __future__ import annotations

from pathlib import Path


class KsmithError(Exception):
    """A problem with the user's input (spec, file, argument). The CLI prints it and exits 2."""


class SpecError(KsmithError):
    """A spec (or any YAML/JSON input) is malformed.

    `file` is the offending file, `field` a dotted path inside it (``relations.diet.range``),
    `expected` what would have been valid.
    """

    def __init__(self, message: str, *, file: str | Path | None = None, field: str | None = None):
        self.file = str(file) if file is not None else None
        self.field = field
        self.message = message
        where = []
        if self.file:
            where.append(self.file)
        if field:
            where.append(f"field '{field}'")
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
