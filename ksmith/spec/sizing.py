"""Sizes computed from specs alone, before anything is built.

`validate` uses these to refuse a world or a suite beyond `ksmith.spec.limits` and to catch a
scale no level can supply. Counts are exact where the spec fixes them (nodes per level, pool and
closed-set sizes) and upper bounds where sampling decides (base facts, targetable facts, probes).
Python ints, so 10^30 nodes is a number in a message, not an overflow or a hang.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ksmith.spec.graph_checks import relation_classes

if TYPE_CHECKING:
    from ksmith.spec.graph import GraphSpec
    from ksmith.spec.intervention import InterventionSpec

Class = tuple[str, str]  # ("level", name) or ("value", name)
BINARY_FORMATS = ("mcq", "qa")  # formats of comparison and negation probes


def level_counts(spec: GraphSpec, size: str) -> dict[str, int]:
    """Hierarchy nodes per level at `size` (explicit node lists ignore the preset)."""
    if spec.hierarchy.nodes is not None:
        counts = dict.fromkeys(spec.levels, 0)
        for n in spec.hierarchy.nodes:
            if n.level in counts:
                counts[n.level] += 1
        return counts
    branching = spec.sizes[size].branching
    out: dict[str, int] = {}
    n = 1
    for lv in spec.levels:
        n *= branching.get(lv, 0)
        out[lv] = n
    return out


def value_counts(spec: GraphSpec, size: str) -> dict[str, int]:
    """Entities per value type at `size`: closed values, or the pool's count."""
    preset = spec.sizes[size]
    out = {}
    for name, vt in spec.value_types.items():
        if vt.kind == "closed":
            out[name] = len(vt.values or [])
        else:
            out[name] = preset.pools.get(name, vt.count or len(vt.values or []))
    return out


def class_counts(spec: GraphSpec, size: str) -> dict[Class, int]:
    """Entities per class (level or value type) at `size`."""
    out: dict[Class, int] = {("level", lv): n for lv, n in level_counts(spec, size).items()}
    out.update({("value", v): n for v, n in value_counts(spec, size).items()})
    return out


def entity_count(spec: GraphSpec, size: str) -> int:
    """All entities of the world at `size`."""
    return sum(class_counts(spec, size).values())


def base_fact_bound(spec: GraphSpec, size: str) -> int:
    """Most base facts the world at `size` can sample: one is_a per non-root node, and per
    sampled relation every subject declaring its largest number of values."""
    counts = class_counts(spec, size)
    levels = level_counts(spec, size)
    total = sum(levels.values()) - levels[spec.levels[0]]
    for name, rel in spec.relations.items():
        if rel.derived:
            continue
        dom, rng = relation_classes(spec, name)
        subjects = sum(counts.get(c, 0) for c in dom)
        objects = sum(counts.get(c, 0) for c in rng)
        total += subjects * min(rel.values_per_subject[1], objects)
    return total


def targetable_bound(spec: GraphSpec, size: str, level: str) -> tuple[int, int, int]:
    """(upper bound on the requests one group can hold at `level`, nodes, relations).

    Requests target base facts of sampled (not derived, not hierarchy) relations whose subject
    is at `level`, at most one per (subject, relation): so nodes x relations bounds a scale.
    """
    nodes = level_counts(spec, size).get(level, 0)
    n_rel = 0
    for name, rel in spec.relations.items():
        if rel.derived:
            continue
        dom, _ = relation_classes(spec, name)
        if ("level", level) not in dom:
            continue
        cov = rel.coverage.get(level, rel.coverage.get(spec.node_type(level), 1.0))
        if cov > 0:
            n_rel += 1
    return nodes * n_rel, nodes, n_rel


def probes_per_request_bound(ispec: InterventionSpec) -> int:
    """Most probe rows one request can yield (ksmith.intervene.probes): per format one direct,
    the paraphrases, one reverse, the multi-hop and contextual probes; per binary format the
    comparisons and two true/false pairs."""
    f = len(ispec.formats)
    fb = len([x for x in ispec.formats if x in BINARY_FORMATS])
    p = ispec.paraphrases_per_request
    per_format = 1 + p + 1 + ispec.multi_hop_per_request + ispec.contextual_per_request
    return f * per_format + fb * (ispec.comparison_per_request + 4)


def suite_requests(ispec: InterventionSpec, levels: list[str], n_graphs: int) -> int:
    """Requests a suite asks for: graphs x kinds x levels x scales x groups x scale (plus the
    capability-profile requests)."""
    per_graph = sum(
        ispec.groups_for(s) * s for lv in ispec.levels if lv in levels for s in ispec.scales_for(lv)
    )
    # capability-profile configs: `profile_per_level` edit requests per level, where declared
    profile = getattr(ispec, "profile_per_level", 0) * len(
        [lv for lv in ispec.levels if lv in levels]
    )
    return n_graphs * (len(ispec.kinds) * per_graph + profile)


def syllable_capacity(params: dict) -> int | None:
    """Distinct names the `syllables` generator can make within its syllable limits (an upper
    bound: different syllable splits of one string count twice), or None if unknown."""
    from ksmith.graph.names import CODAS, ONSETS, VOWELS

    try:
        lo = int(params.get("min_syllables", 2))
        hi = int(params.get("max_syllables", 3))
        onsets = len(set(params.get("onsets", ONSETS)))
        vowels = len(set(params.get("vowels", VOWELS)))
        codas = len(set(params.get("codas", CODAS)))
    except (TypeError, ValueError):
        return None
    if not 1 <= lo <= hi:
        return None
    base = onsets * vowels
    hi = min(hi, lo + 64)  # beyond this the count is astronomically large anyway
    return sum(base**k * codas for k in range(lo, hi + 1)) if base else 0


def fmt_count(n: int) -> str:
    """A count for messages: exact below 10^12, else as a power of ten."""
    return f"{n:,}" if n < 10**12 else f"about 10^{math.floor(math.log10(n))}"
