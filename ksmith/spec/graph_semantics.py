"""Semantic checks of a graph spec: accepted specs must yield unambiguous, non-empty data.

`graph_semantic_errors` runs with the other cross-field checks (`check_graph`) and finds:

- two relations sharing a cloze, paraphrase or question prompt (a probe would read two ways,
  and its recorded answer would be wrong for one of them);
- a reverse prompt identical to another relation's cloze or paraphrase prompt (reverse probes
  would ask a direct question of the other relation); when the other relation is this one's
  inverse the probes only duplicate each other, so that case is a warning;
- derived relations that can never hold: composition or inverse rules that only feed each other
  (a cycle with no sampled relation in it);
- name generators that cannot make the names a size preset needs within their syllable limits,
  and generator parameters the generator does not take.

`graph_warnings` lists what a user may mean but should know about (for `ksmith validate`).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from ksmith.spec.sizing import class_counts, fmt_count, level_counts, syllable_capacity

if TYPE_CHECKING:
    from ksmith.spec.graph import GraphSpec

MCQ_OPTIONS = 4  # options of an object-asking MCQ probe (ksmith.intervene.probes)
Issue = tuple[str, str]  # (dotted field, message)


def _norm(text: str) -> str:
    """A prompt with its placeholder made anonymous: '{subject} eats' == '{object} eats'."""
    return " ".join(text.replace("{subject}", "{}").replace("{object}", "{}").split())


def _template_fields(spec: GraphSpec, relation: str) -> str:
    if relation == spec.hierarchy.relation:
        return "hierarchy.templates"
    return f"relations.{relation}.templates"


def _prompts(spec: GraphSpec, keys: tuple[str, ...]) -> dict[str, tuple[str, str, str]]:
    """normalized prompt -> (relation, field, text) of its first use, over `keys`."""
    first: dict[str, tuple[str, str, str]] = {}
    for rel in spec.relation_names():
        t = spec.templates(rel)
        for key in keys:
            for i, text in enumerate(getattr(t, key)):
                first.setdefault(
                    _norm(text), (rel, f"{_template_fields(spec, rel)}.{key}.{i}", text)
                )
    return first


def shared_templates(spec: GraphSpec) -> tuple[list[Issue], list[Issue]]:
    """(errors, warnings) for prompts two relations share (see the module doc)."""
    errors: list[Issue] = []
    warnings: list[Issue] = []
    for keys in (("cloze", "paraphrase"), ("question",)):
        seen: dict[str, tuple[str, str]] = {}
        for rel in spec.relation_names():
            t = spec.templates(rel)
            for key in keys:
                for i, text in enumerate(getattr(t, key)):
                    n = _norm(text)
                    other = seen.setdefault(n, (rel, f"{_template_fields(spec, rel)}.{key}.{i}"))
                    if other[0] != rel:
                        errors.append((
                            f"{_template_fields(spec, rel)}.{key}.{i}",
                            f"'{text}' is also a prompt of relation '{other[0]}' ({other[1]}): "
                            "a probe would ask both relations at once and be scored against one; "
                            "reword one of them",
                        ))  # fmt: skip
    inverse = dict(spec.inverse_pairs())
    direct = _prompts(spec, ("cloze", "paraphrase"))
    for rel in spec.relation_names():
        for i, text in enumerate(spec.templates(rel).reverse):
            hit = direct.get(_norm(text))
            if hit is None or hit[0] == rel:
                continue
            field = f"{_template_fields(spec, rel)}.reverse.{i}"
            if inverse.get(rel) == hit[0]:
                warnings.append((
                    field,
                    f"'{text}' is the prompt {hit[1]} of the inverse relation '{hit[0]}': "
                    "reverse probes of this relation duplicate direct probes of the inverse",
                ))  # fmt: skip
            else:
                errors.append((
                    field,
                    f"'{text}' is also the prompt {hit[1]} of relation '{hit[0]}': reverse "
                    "probes would read as direct probes of that relation; reword one of them",
                ))  # fmt: skip
    return errors, warnings


def ungrounded_relations(spec: GraphSpec) -> list[Issue]:
    """Derived relations no rule chain from sampled relations reaches (rule cycles)."""
    grounded = {spec.hierarchy.relation} | {n for n, r in spec.relations.items() if not r.derived}
    rules = spec.compose_rules()
    pairs = spec.inverse_pairs()
    changed = True
    while changed:
        changed = False
        for a, b in pairs:
            if a in grounded and b not in grounded:
                grounded.add(b)
                changed = True
        for r in rules:
            if r.conclusion not in grounded and set(r.premises) <= grounded:
                grounded.add(r.conclusion)
                changed = True
    feeds: dict[str, list[str]] = {}  # relation -> relations its facts come from
    for r in rules:
        feeds.setdefault(r.conclusion, []).extend(r.premises)
    for a, b in pairs:
        feeds.setdefault(b, []).append(a)
    out: list[Issue] = []
    for name, rel in spec.relations.items():
        if not rel.derived or name in grounded or name not in feeds:
            continue  # a derived relation with no rule at all is reported by check_relations
        cycle = _cycle_through(name, feeds, grounded)
        how = " <- ".join(cycle) if cycle else name
        out.append((
            f"relations.{name}.derived",
            f"'{name}' can never hold: it is derived only from relations that are themselves "
            f"derived from it (rule cycle {how}); make one of them sampled (derived: false) or "
            "add a rule from sampled relations",
        ))  # fmt: skip
    return out


def _cycle_through(start: str, feeds: dict[str, list[str]], grounded: set[str]) -> list[str]:
    """A dependency path start <- ... <- start among ungrounded relations, if any."""
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for src in feeds.get(node, []):
            if src in grounded:
                continue
            if src == start:
                return [*path, start]
            if src not in seen:
                seen.add(src)
                stack.append((src, [*path, src]))
    return []


def name_issues(spec: GraphSpec) -> list[Issue]:
    """Generator parameters the generator does not take, and presets needing more names than
    the generator can make within its limits."""
    from ksmith.graph.names import NAME_GENERATORS

    names = spec.names
    if names.generator not in NAME_GENERATORS:
        return []  # reported by check_names
    out: list[Issue] = []
    gen = NAME_GENERATORS.get(names.generator)
    try:
        sig = inspect.signature(gen)
    except (TypeError, ValueError):
        sig = None
    if sig is not None and not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        takes = [p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY]
        for key in names.params:
            if key not in takes:
                out.append((
                    f"names.params.{key}",
                    f"generator '{names.generator}' takes no parameter '{key}'; it takes {takes}",
                ))  # fmt: skip
    if names.generator != "syllables" or out:
        return out
    p = names.params
    lo, hi = p.get("min_syllables", 2), p.get("max_syllables", 3)
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
        return [
            (
                "names.params",
                f"expected integers 1 <= min_syllables <= max_syllables, got {lo}, {hi}",
            )
        ]
    cap = syllable_capacity(p)
    if cap is None:
        return out
    for size in spec.sizes:
        need = _generated_names(spec, size)
        for suffix, n in need.items():
            if n > cap:
                which = f" with suffix '{suffix}'" if suffix else ""
                out.append((
                    "names.params",
                    f"size '{size}' needs {fmt_count(n)} generated names{which}, but "
                    f"'syllables' with {lo}-{hi} syllables makes at most {fmt_count(cap)}; raise "
                    "max_syllables or use a smaller size",
                ))  # fmt: skip
    return out


def _generated_names(spec: GraphSpec, size: str) -> dict[str, int]:
    """Names the generator must make at `size`, per suffix (names differ by suffix)."""
    need: dict[str, int] = {}
    explicit = spec.names.explicit
    if spec.hierarchy.nodes is None:
        for lv, n in level_counts(spec, size).items():
            sfx = spec.hierarchy.suffixes.get(lv, "")
            need[sfx] = need.get(sfx, 0) + max(0, n - len(explicit.get(lv, [])))
    counts = class_counts(spec, size)
    for name, vt in spec.value_types.items():
        if vt.kind == "pool":
            n = counts[("value", name)] - len(vt.values or []) - len(explicit.get(name, []))
            need[vt.suffix] = need.get(vt.suffix, 0) + max(0, n)
    return need


def small_ranges(spec: GraphSpec, size: str | None = None) -> list[tuple[str, str, int]]:
    """(relation, range, entities) for relations whose range has fewer entities than an MCQ
    has options: closed value sets always, pools and levels at `size` when given."""
    out = []
    counts = class_counts(spec, size) if size is not None else {}
    for name, rel in spec.relations.items():
        vt = spec.value_types.get(rel.range)
        if vt is not None and vt.kind == "closed":
            n = len(vt.values or [])
        elif size is not None:
            from ksmith.spec.graph_checks import resolve_term

            n = sum(counts.get(c, 0) for c in resolve_term(spec, rel.range))
        else:
            continue
        if n < MCQ_OPTIONS:
            out.append((name, rel.range, n))
    return out


def graph_semantic_errors(spec: GraphSpec) -> list[Issue]:
    """Errors of the semantic checks (see the module doc)."""
    errors, _ = shared_templates(spec)
    return [*errors, *ungrounded_relations(spec), *name_issues(spec)]


def graph_warnings(spec: GraphSpec) -> list[Issue]:
    """What a user may mean but should know: duplicated reverse probes, closed value sets too
    small for 4-option MCQ probes."""
    _, warnings = shared_templates(spec)
    for rel, rng, n in small_ranges(spec):
        warnings.append((
            f"value_types.{rng}.values",
            f"{n} value(s), fewer than the {MCQ_OPTIONS} options of an MCQ probe: MCQ probes on "
            f"relation '{rel}' would have {n} option(s) (an error in a suite with format mcq)",
        ))  # fmt: skip
    return warnings


__all__ = [
    "MCQ_OPTIONS",
    "graph_semantic_errors",
    "graph_warnings",
    "name_issues",
    "shared_templates",
    "small_ranges",
    "ungrounded_relations",
]
