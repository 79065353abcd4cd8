"""Worlds: knowledge graphs built from graph specs, with their closure under the spec's rules.

from ksmith.graph import build_world
world = build_world(load_spec("specs/graphs/biology.yaml"), "small")
"""

from ksmith.graph.closure import ClosureTable, compute_closure
from ksmith.graph.facts import frozen_heap
from ksmith.graph.names import NAME_GENERATORS
from ksmith.graph.world import Fact, Node, World, build_world

__all__ = [
    "NAME_GENERATORS",
    "ClosureTable",
    "Fact",
    "Node",
    "World",
    "build_world",
    "compute_closure",
    "frozen_heap",
]
