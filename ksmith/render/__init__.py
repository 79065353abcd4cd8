"""Rendering facts as text: training corpus lines and probe prompts."""

from ksmith.render.corpus import corpus_batches, corpus_lines, world_facts
from ksmith.render.text import FALSE, NO, TRUE, YES, Renderer, fill

__all__ = [
    "FALSE",
    "NO",
    "TRUE",
    "YES",
    "Renderer",
    "corpus_batches",
    "corpus_lines",
    "fill",
    "world_facts",
]
