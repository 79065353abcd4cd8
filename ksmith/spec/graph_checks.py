"""Cross-field checks of a graph spec, each reported with its dotted field path.

Types are checked by pydantic; this module checks what types cannot say: that names refer to
things that exist, that the hierarchy is a tree with one level per step, that rules chain, and
that templates carry the placeholders the renderer fills.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING

from ksmith.spec.base import SemanticErrors

if TYPE_CHECKING:
    from ksmith.spec.graph import GraphSpec, Templates

# key -> (placeholders required, placeholders forbidden, must end right before the answer)
TEMPLATE_RULES: dict[str, tuple[set[str], set[str], bool]] = {
    "statement": ({"subject", "object"}, set(), False),
    "question": ({"subject"}, {"object"}, False),
    "cloze": ({"subject"}, {"object"}, True),
    "paraphrase": ({"subject"}, {"object"}, True),
    "reverse": ({"object"}, {"subject"}, True),
    "negation": ({"subject", "object"}, set(), False),
}
PLACEHOLDERS = {"subject", "object"}

Class = tuple[str, str]  # ("level", name) or ("value", name)


class _Checker:
    def __init__(self, spec: GraphSpec):
        self.spec = spec
        self.errors: list[tuple[str, str]] = []

    def err(self, field: str, msg: str) -> None:
        self.errors.append((field, msg))

    # -- name resolution ------------------------------------------------------------------
    def resolve(self, term: str) -> set[Class] | None:
        """The classes of entities a domain/range term stands for, or None if unknown."""
        s = self.spec
        out: set[Class] = set()
        if term in s.levels:
            out.add(("level", term))
        out |= {("level", lv) for lv in s.levels if s.node_type(lv) == term}
        if term in s.value_types:
            out.add(("value", term))
        return out or None

    def known_terms(self) -> str:
        s = self.spec
        terms = [*s.levels, *sorted({s.node_type(lv) for lv in s.levels}), *s.value_types]
        return ", ".join(dict.fromkeys(terms))

    def rel_domain(self, name: str) -> set[Class]:
        s = self.spec
        if name == s.hierarchy.relation:
            return {("level", lv) for lv in s.levels[1:]}
        out: set[Class] = set()
        for t in s.relations[name].domain:
            out |= self.resolve(t) or set()
        return out

    def rel_range(self, name: str) -> set[Class]:
        s = self.spec
        if name == s.hierarchy.relation:
            return {("level", lv) for lv in s.levels[:-1]}
        return self.resolve(s.relations[name].range) or set()

    # -- checks ----------------------------------------------------------------------------
    def run(self) -> list[tuple[str, str]]:
        self.check_levels()
        self.check_hierarchy()
        self.check_value_types()
        self.check_relations()
        self.check_rules()
        self.check_sizes()
        self.check_names()
        return self.errors

    def check_levels(self) -> None:
        s = self.spec
        seen: set[str] = set()
        for i, lv in enumerate(s.levels):
            if lv in seen:
                self.err(f"levels.{i}", f"duplicate level '{lv}'")
            seen.add(lv)
        for key in ("node_types", "suffixes"):
            for lv in getattr(s.hierarchy, key):
                if lv not in s.levels:
                    self.err(f"hierarchy.{key}.{lv}", f"unknown level '{lv}'; levels: {s.levels}")
        clash = set(s.value_types) & ({*s.levels} | {s.node_type(lv) for lv in s.levels})
        for name in sorted(clash):
            self.err(f"value_types.{name}", f"'{name}' is also a level or node type; rename it")
        if s.hierarchy.relation in s.relations:
            self.err(
                f"relations.{s.hierarchy.relation}",
                "the hierarchy relation is declared by `hierarchy`, not under relations",
            )
        self.check_templates("hierarchy.templates", s.hierarchy.templates)

    def check_hierarchy(self) -> None:
        s = self.spec
        nodes = s.hierarchy.nodes
        if nodes is None:
            return
        if not nodes:
            self.err("hierarchy.nodes", "expected at least one node")
            return
        by_name: dict[str, int] = {}
        for i, n in enumerate(nodes):
            if n.name in by_name:
                self.err(f"hierarchy.nodes.{i}.name", f"duplicate node name '{n.name}'")
            by_name.setdefault(n.name, i)
            if n.level not in s.levels:
                self.err(
                    f"hierarchy.nodes.{i}.level", f"unknown level '{n.level}'; levels: {s.levels}"
                )
        # cycles first: a cycle is reported as such, not as a chain of level mismatches
        in_cycle: set[str] = set()
        for n in nodes:
            path: list[str] = []
            cur: str | None = n.name
            while cur is not None and cur in by_name and cur not in path and cur not in in_cycle:
                path.append(cur)
                cur = nodes[by_name[cur]].parent
            if cur is not None and cur in path:
                cycle = path[path.index(cur) :]
                in_cycle |= set(cycle)
                self.err(
                    f"hierarchy.nodes.{by_name[cur]}.parent",
                    "cyclic hierarchy: " + " -> ".join([*cycle, cur]),
                )
        for i, n in enumerate(nodes):
            if n.name in in_cycle or n.level not in s.levels:
                continue
            depth = s.levels.index(n.level)
            if n.parent is None:
                if depth:
                    self.err(f"hierarchy.nodes.{i}.parent", f"a '{n.level}' node needs a parent")
                continue
            if n.parent not in by_name:
                self.err(f"hierarchy.nodes.{i}.parent", f"unknown parent node '{n.parent}'")
                continue
            plevel = nodes[by_name[n.parent]].level
            if depth == 0 or plevel != s.levels[depth - 1]:
                want = s.levels[depth - 1] if depth else "none (first level)"
                self.err(
                    f"hierarchy.nodes.{i}.parent",
                    f"parent '{n.parent}' is at level '{plevel}'; expected level {want}",
                )

    def check_value_types(self) -> None:
        owner: dict[str, str] = {}
        for name, vt in self.spec.value_types.items():
            for v in vt.values or []:
                if owner.setdefault(v, name) != name:
                    self.err(
                        f"value_types.{name}.values",
                        f"'{v}' is also a value of "
                        f"'{owner[v]}'; entity names must be unique across the spec",
                    )
        for i, n in enumerate(self.spec.hierarchy.nodes or []):
            if n.name in owner:
                self.err(
                    f"hierarchy.nodes.{i}.name", f"'{n.name}' is also a value of '{owner[n.name]}'"
                )
        for name, vt in self.spec.value_types.items():
            f = f"value_types.{name}"
            if vt.kind == "closed":
                if not vt.values:
                    self.err(f"{f}.values", "a closed value type needs a non-empty list of values")
                if vt.count is not None:
                    self.err(f"{f}.count", "a closed value type takes `values`, not `count`")
            elif vt.count is None and not vt.values:
                missing = [z for z, p in self.spec.sizes.items() if name not in p.pools]
                if missing:
                    self.err(f"{f}.count", f"a pool needs `count` (or sizes.*.pools.{name})")
            if vt.values and len(set(vt.values)) != len(vt.values):
                dup = sorted({v for v in vt.values if vt.values.count(v) > 1})
                self.err(f"{f}.values", f"duplicate values: {dup}")

    def check_relations(self) -> None:
        s = self.spec
        conclusions = {r.conclusion for r in s.compose_rules()}
        inverse_of = {b: a for a, b in s.inverse_pairs()}
        for name, rel in s.relations.items():
            f = f"relations.{name}"
            dom: set[Class] = set()
            for i, t in enumerate(rel.domain):
                got = self.resolve(t)
                if got is None:
                    self.err(
                        f"{f}.domain.{i}",
                        f"unknown level or type '{t}'; known: {self.known_terms()}",
                    )
                else:
                    dom |= got
            rng = self.resolve(rel.range)
            if rng is None:
                self.err(
                    f"{f}.range",
                    f"unknown value type, level or type '{rel.range}'; known: {self.known_terms()}",
                )
            for key, p in rel.coverage.items():
                if key not in rel.domain and not (self.resolve(key) or set()) & dom:
                    self.err(f"{f}.coverage.{key}", f"'{key}' is not in the domain {rel.domain}")
                if not 0.0 <= p <= 1.0:
                    self.err(f"{f}.coverage.{key}", f"expected a probability in [0, 1], got {p}")
            lo, hi = rel.values_per_subject
            if rel.cardinality == "one" and (lo, hi) != (1, 1):
                self.err(f"{f}.values_per_subject", "cardinality 'one' takes exactly [1, 1]")
            if not 1 <= lo <= hi:
                self.err(f"{f}.values_per_subject", f"expected 1 <= min <= max, got [{lo}, {hi}]")
            if rel.inherit or name in s.inherited():
                lvls = [s.levels.index(c[1]) for c in dom if c[0] == "level"]
                if not lvls:
                    self.err(f"{f}.inherit", "only relations over hierarchy levels can inherit")
                elif len(lvls) != len(s.levels) - min(lvls):
                    below = s.levels[min(lvls) :]
                    self.err(
                        f"{f}.domain",
                        f"an inheriting relation must cover every level below its highest: {below}",
                    )
            if rel.inverse is not None:
                if rel.inverse not in s.relations:
                    self.err(f"{f}.inverse", f"inverse names undefined relation '{rel.inverse}'")
                elif rel.inverse == name:
                    self.err(f"{f}.inverse", "a relation that is its own inverse is `symmetric`")
                else:
                    back = s.relations[rel.inverse].inverse
                    if back is not None and back != name:
                        self.err(
                            f"{f}.inverse",
                            f"'{rel.inverse}' declares inverse '{back}', not '{name}'",
                        )
                    if rng and not rng & self.rel_domain(rel.inverse):
                        self.err(
                            f"{f}.inverse",
                            f"the domain of '{rel.inverse}' does not cover the range '{rel.range}'",
                        )
            if rel.symmetric and rng and not rng <= dom:
                self.err(
                    f"{f}.symmetric",
                    f"a symmetric relation needs its range '{rel.range}' inside its domain",
                )
            if rel.derived and name not in conclusions and name not in inverse_of:
                self.err(
                    f"{f}.derived", "a derived relation must be a rule conclusion or an inverse"
                )
            self.check_templates(f"{f}.templates", rel.templates)

    def check_rules(self) -> None:
        s = self.spec
        known = set(s.relation_names())
        names: set[str] = set()
        for i, rule in enumerate(s.rules):
            f = f"rules.{i}"
            if rule.kind == "compose":
                if rule.name in names:
                    self.err(f"{f}.name", f"duplicate rule name '{rule.name}'")
                names.add(rule.name)
                rels = [*rule.premises, rule.conclusion]
                fields = [f"{f}.premises.0", f"{f}.premises.1", f"{f}.conclusion"]
                bad = False
                for fld, r in zip(fields, rels, strict=True):
                    if r not in known:
                        self.err(
                            fld, f"rule names undefined relation '{r}'; known: {sorted(known)}"
                        )
                        bad = True
                if bad:
                    continue
                r1, r2 = rule.premises
                if not self.rel_range(r1) & self.rel_domain(r2):
                    self.err(f"{f}.premises", f"the range of '{r1}' is not in the domain of '{r2}'")
                if not self.rel_domain(r1) & self.rel_domain(rule.conclusion):
                    self.err(
                        f"{f}.conclusion",
                        f"the domain of '{r1}' is not in the domain of '{rule.conclusion}'",
                    )
                if not self.rel_range(r2) & self.rel_range(rule.conclusion):
                    self.err(
                        f"{f}.conclusion",
                        f"the range of '{r2}' is not the range of '{rule.conclusion}'",
                    )
                if rule.max_hops > s.max_hops:
                    self.err(f"{f}.max_hops", f"exceeds the spec's max_hops ({s.max_hops})")
            else:
                rels = [rule.relation] + ([rule.inverse] if rule.kind == "inverse" else [])
                for key, r in zip(("relation", "inverse"), rels, strict=False):
                    if r not in s.relations:
                        self.err(
                            f"{f}.{key}",
                            f"rule names undefined relation '{r}'; known: {sorted(s.relations)}",
                        )

    def check_templates(self, f: str, t: Templates) -> None:
        for key, (need, forbid, ends) in TEMPLATE_RULES.items():
            for i, text in enumerate(getattr(t, key)):
                where = f"{f}.{key}.{i}"
                try:
                    used = {
                        name for _, name, _, _ in string.Formatter().parse(text) if name is not None
                    }
                except ValueError as e:
                    self.err(where, f"bad template '{text}': {e}")
                    continue
                unknown = used - PLACEHOLDERS
                if unknown:
                    self.err(
                        where,
                        f"unknown placeholder(s) {sorted(unknown)}; use {{subject}}/{{object}}",
                    )
                missing = need - used
                if missing:
                    self.err(
                        where,
                        f"missing placeholder(s) {['{' + m + '}' for m in sorted(missing)]} in '{text}'",
                    )
                if used & forbid:
                    self.err(
                        where,
                        f"must not contain {['{' + m + '}' for m in sorted(used & forbid)]} (it is the answer)",
                    )
                if ends and text != text.rstrip():
                    self.err(where, "must end right before the answer, without trailing space")
        overlap = set(t.cloze) & set(t.paraphrase)
        if overlap:
            self.err(
                f"{f}.paraphrase",
                f"held-out paraphrases repeat training cloze templates: {sorted(overlap)}",
            )

    def check_sizes(self) -> None:
        s = self.spec
        for need in ("small", "large"):
            if need not in s.sizes:
                self.err("sizes", f"missing size preset '{need}' (have {sorted(s.sizes)})")
        pools = {n for n, v in s.value_types.items() if v.kind == "pool"}
        for z, preset in s.sizes.items():
            for lv in preset.branching:
                if lv not in s.levels:
                    self.err(
                        f"sizes.{z}.branching.{lv}", f"unknown level '{lv}'; levels: {s.levels}"
                    )
            if s.hierarchy.nodes is None:
                for lv in s.levels:
                    if lv not in preset.branching:
                        self.err(f"sizes.{z}.branching", f"missing level '{lv}'")
            for p in preset.pools:
                if p not in pools:
                    self.err(f"sizes.{z}.pools.{p}", f"'{p}' is not a pool value type")

    def check_names(self) -> None:
        from ksmith.graph.names import NAME_GENERATORS

        s = self.spec
        if s.names.generator not in NAME_GENERATORS:
            self.err(
                "names.generator",
                f"unknown name generator '{s.names.generator}'; known: {NAME_GENERATORS.names()}",
            )
        pools = {n for n, v in s.value_types.items() if v.kind == "pool"}
        for key in s.names.explicit:
            if key not in s.levels and key not in pools:
                self.err(f"names.explicit.{key}", f"expected a level or pool name, got '{key}'")


def check_graph(spec: GraphSpec) -> None:
    """Raise `SemanticErrors` listing every cross-field problem of `spec`."""
    errors = _Checker(spec).run()
    if not errors:  # the semantic checks assume every name resolves
        from ksmith.spec.graph_semantics import graph_semantic_errors

        errors = graph_semantic_errors(spec)
    if errors:
        raise SemanticErrors(errors)


def relation_classes(spec: GraphSpec, relation: str) -> tuple[set[Class], set[Class]]:
    """(domain classes, range classes) of a relation, e.g. ({("level", "leaf")}, {("value", "diet")})."""
    c = _Checker(spec)
    return c.rel_domain(relation), c.rel_range(relation)


def resolve_term(spec: GraphSpec, term: str) -> set[Class]:
    """The classes a domain/range term stands for (empty if unknown)."""
    return _Checker(spec).resolve(term) or set()


__all__ = ["TEMPLATE_RULES", "check_graph", "relation_classes", "resolve_term"]
