"""A tiny graph spec for tests (here and in other packages): every rule kind in a few dozen facts.

    spec = tiny_spec(seed=3)              # GraphSpec, validated
    data = tiny_spec_data(seed=3)         # the same as a plain dict, to mutate in tests

Levels root -> mid -> leaf (`is_a`, transitive once); closed values `food`, pools `place` and
`zone`; relations: `eats` (inherits), `lives_in` (leaf -> place, inverse `home_of`), `in_zone`
(place -> zone), `seen_in` (compose lives_in then in_zone), `friend_of` (symmetric, many).
"""

from __future__ import annotations

import copy
from typing import Any

from ksmith.spec.graph import GraphSpec


def _templates(verb: str) -> dict[str, list[str]]:
    return {
        "statement": [f"{{subject}} {verb} {{object}}."],
        "question": [f"What does {{subject}} {verb}?"],
        "cloze": [f"{{subject}} {verb}"],
        "paraphrase": [f"It is said that {{subject}} {verb}"],
        "reverse": [f"Something that {verb} {{object}} is"],
        "negation": [f"{{subject}} does not {verb} {{object}}."],
    }


TINY: dict[str, Any] = {
    "kind": "graph",
    "version": 1,
    "name": "tiny",
    "domain": "test",
    "seed": 0,
    "levels": ["root", "mid", "leaf"],
    "hierarchy": {
        "relation": "is_a",
        "node_types": {"root": "order", "mid": "family", "leaf": "kind"},
        "transitive_hops": 1,
        "templates": _templates("is a kind of"),
    },
    "value_types": {
        "food": {"kind": "closed", "values": ["meat", "grass", "seeds", "fish"]},
        "place": {"kind": "pool", "count": 5},
        "zone": {"kind": "pool", "count": 2},
    },
    "relations": {
        "eats": {
            "domain": ["root", "mid", "leaf"],
            "range": "food",
            "inherit": True,
            "coverage": {"mid": 0.4, "leaf": 0.2},
            "templates": _templates("eats"),
        },
        "lives_in": {
            "domain": ["leaf"],
            "range": "place",
            "inverse": "home_of",
            "templates": _templates("lives in"),
        },
        "home_of": {
            "domain": ["place"],
            "range": "leaf",
            "cardinality": "many",
            "derived": True,
            "templates": _templates("is home to"),
        },
        "in_zone": {"domain": ["place"], "range": "zone", "templates": _templates("lies in")},
        "seen_in": {
            "domain": ["leaf"],
            "range": "zone",
            "cardinality": "many",
            "derived": True,
            "templates": _templates("is seen in"),
        },
        "friend_of": {
            "domain": ["leaf"],
            "range": "leaf",
            "cardinality": "many",
            "values_per_subject": [1, 2],
            "symmetric": True,
            "coverage": {"leaf": 0.5},
            "templates": _templates("befriends"),
        },
    },
    "rules": [
        {
            "kind": "compose",
            "name": "seen_in",
            "premises": ["lives_in", "in_zone"],
            "conclusion": "seen_in",
            "max_hops": 2,
        }
    ],
    "max_hops": 4,
    "names": {"generator": "syllables"},
    "sizes": {
        "small": {"branching": {"root": 2, "mid": 2, "leaf": 3}},
        "large": {"branching": {"root": 4, "mid": 4, "leaf": 8}, "pools": {"place": 20}},
    },
}


def tiny_spec_data(seed: int = 0, branching: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """The tiny spec as a fresh dict, with its seed and (optionally) small-size branching set."""
    data = copy.deepcopy(TINY)
    data["seed"] = seed
    if branching is not None:
        data["sizes"]["small"]["branching"] = dict(zip(data["levels"], branching, strict=True))
    return data


def tiny_spec(seed: int = 0, branching: tuple[int, int, int] | None = None) -> GraphSpec:
    """The tiny spec, validated."""
    return GraphSpec.model_validate(tiny_spec_data(seed, branching))
