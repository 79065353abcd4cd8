"""Update methods: editing and unlearning under one objective (see base.py)."""

from ksmith.methods.base import (
    METHODS,
    MethodParams,
    Request,
    TextPair,
    UpdateMethod,
    UpdateProblem,
    UpdateResult,
)

__all__ = [
    "METHODS",
    "MethodParams",
    "Request",
    "TextPair",
    "UpdateMethod",
    "UpdateProblem",
    "UpdateResult",
]
