"""Evaluation: backends, probe scoring, metrics, lm-eval bridge."""

from ksmith.evaluate.backend import BACKENDS, Backend

__all__ = ["BACKENDS", "Backend"]
