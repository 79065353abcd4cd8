"""The graph spec: levels, hierarchy, value types, relations, rules, templates, names, sizes.

A graph spec (``specs/graphs/*.yaml``) declares a fictional knowledge graph with no code
(docs/specs.md, "Graph specs"; docs/design.md). `ksmith.graph.build_world` turns it into a world
and its closure. Cross-field checks (unknown ranges, cyclic hierarchies, rules over undefined
relations, template placeholders, ...) live in `ksmith.spec.graph_checks`, semantic ones (shared
prompts, rule cycles, name capacity) in `ksmith.spec.graph_semantics`; both run when the model
is built.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from ksmith.spec.base import SpecModel

Name = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
TemplateList = Annotated[list[str], Field(min_length=1)]


class Templates(SpecModel):
    """Natural-language renderings of one relation. Each key is a non-empty list of strings."""

    statement: TemplateList = Field(
        description="training sentences stating the fact; use {subject} and {object}"
    )
    question: TemplateList = Field(
        description="training questions whose answer is the object; use {subject}, not {object}"
    )
    cloze: TemplateList = Field(
        description="training prompts ending right before the object (no trailing space); "
        "use {subject}, not {object}"
    )
    paraphrase: TemplateList = Field(
        description="held-out cloze prompts (never in training) ending right before the object; "
        "use {subject}, not {object}; must differ from every cloze template"
    )
    reverse: TemplateList = Field(
        description="cloze prompts ending right before the subject; use {object}, not {subject}"
    )
    negation: TemplateList = Field(description="negated statements; use {subject} and {object}")


class HierarchyNode(SpecModel):
    """One explicitly listed hierarchy node."""

    name: str = Field(min_length=1, description="node name (unique in the spec)")
    level: str = Field(description="one of the spec's levels")
    parent: str | None = Field(
        default=None, description="parent node name, one level up; null for the first level"
    )


class HierarchySpec(SpecModel):
    """The is_a-style tree: each node points to its parent one level up."""

    relation: Name = Field(default="is_a", description="name of the child -> parent relation")
    node_types: dict[str, Name] = Field(
        default_factory=dict,
        description="node type per level (level -> type name); a level without one uses the "
        "level name as its type",
    )
    nodes: list[HierarchyNode] | None = Field(
        default=None,
        description="explicit node list; when given, size presets do not change the hierarchy",
    )
    suffixes: dict[str, str] = Field(
        default_factory=dict,
        description="text appended to generated names per level (e.g. 'ids' for families)",
    )
    transitive_hops: int = Field(
        default=0,
        ge=0,
        description="if > 0, derive ancestor facts (child is_a grandparent ...) by composing "
        "the relation with itself, up to this many rule applications",
    )
    templates: Templates = Field(description="templates for the hierarchy relation")


class ValueTypeSpec(SpecModel):
    """A set of objects: a closed list of values, or a pool of synthetic named entities."""

    kind: Literal["closed", "pool"] = Field(
        description="closed: a fixed list of values; pool: `count` generated entities"
    )
    values: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None, description="closed: the values (unique); pool: optional explicit names"
    )
    count: int | None = Field(
        default=None, ge=1, description="pool: default number of entities (sizes may override)"
    )
    suffix: str = Field(default="", description="pool: text appended to generated names")


class RelationSpec(SpecModel):
    """A relation between subjects (levels or types) and objects (a value type, level or type)."""

    domain: list[str] = Field(
        min_length=1, description="subjects: level names, node types or value-type names"
    )
    range: str = Field(description="objects: a value type, a level or a node type")
    cardinality: Literal["one", "many"] = Field(
        default="one", description="one value per subject, or several"
    )
    values_per_subject: tuple[int, int] = Field(
        default=(1, 1),
        description="many: [min, max] base values sampled per declaring subject",
    )
    coverage: dict[str, float] = Field(
        default_factory=dict,
        description="probability (0..1) that a subject of this level/type declares a base "
        "value; missing entries default to 1.0 (inheriting relations: overrides below the root)",
    )
    inherit: bool = Field(
        default=False,
        description="a value declared at a node holds for its descendants unless overridden",
    )
    inverse: Name | None = Field(
        default=None, description="name of the inverse relation (o inverse s holds when s r o)"
    )
    symmetric: bool = Field(default=False, description="s r o implies o r s")
    derived: bool = Field(
        default=False,
        description="no base facts are sampled; facts come only from rules (inverse, compose)",
    )
    templates: Templates = Field(description="templates for this relation")


class ComposeRule(SpecModel):
    """r1(a, b) and r2(b, c) imply r3(a, c)."""

    kind: Literal["compose"] = Field(description="rule kind")
    name: Name = Field(description="rule name, recorded in derived facts as compose:<name>")
    premises: tuple[Name, Name] = Field(description="[r1, r2]: r1 from a to b, r2 from b to c")
    conclusion: Name = Field(description="r3, from a to c")
    max_hops: int = Field(
        default=2, ge=1, description="largest number of rule applications in a conclusion"
    )


class RelationRule(SpecModel):
    """Inheritance or symmetry of one relation (same as the relation's own flag)."""

    kind: Literal["inherit", "symmetric"] = Field(description="rule kind")
    relation: Name = Field(description="the relation the rule applies to")


class InverseRule(SpecModel):
    """`relation` and `inverse` are each other's inverse (same as the relation's flag)."""

    kind: Literal["inverse"] = Field(description="rule kind")
    relation: Name = Field(description="a relation")
    inverse: Name = Field(description="its inverse relation")


Rule = Annotated[ComposeRule | RelationRule | InverseRule, Field(discriminator="kind")]


class NamesSpec(SpecModel):
    """How entity names are made: a registered generator, or explicit lists."""

    generator: str = Field(
        default="syllables", description="name generator registered in ksmith.graph.NAME_GENERATORS"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="generator parameters")
    explicit: dict[str, list[Annotated[str, Field(min_length=1)]]] = Field(
        default_factory=dict,
        description="level or pool name -> names used first, in order (generated after)",
    )


class SizeSpec(SpecModel):
    """One size preset: how many nodes per level and entities per pool."""

    branching: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict,
        description="first level: number of nodes; other levels: children per parent",
    )
    pools: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="pool value type -> number of entities"
    )


class GraphSpec(SpecModel):
    """A knowledge-graph schema (docs/specs.md, "Graph specs")."""

    # The world draws value types and relations in declaration order: their order is part of
    # the spec's canonical form and fingerprint (ksmith.spec.canonical).
    ORDERED_FIELDS: ClassVar[frozenset[str]] = frozenset({"relations", "value_types"})

    kind: Literal["graph"] = Field(default="graph", description="spec kind")
    version: int = Field(ge=1, description="spec version; bump when the world changes")
    name: Name = Field(description="spec name")
    domain: Name = Field(description="domain (biology, economics, history, physics, ...)")
    description: str = Field(default="", description="free text")
    seed: int = Field(description="seed for every random choice (names, facts)")
    levels: list[Name] = Field(
        default_factory=lambda: ["root", "intermediate", "leaf"],
        min_length=1,
        description="hierarchy levels ordered general -> specific",
    )
    hierarchy: HierarchySpec = Field(description="the concept hierarchy")
    value_types: dict[Name, ValueTypeSpec] = Field(
        default_factory=dict, description="closed value sets and entity pools"
    )
    relations: dict[Name, RelationSpec] = Field(
        min_length=1, description="relations besides the hierarchy relation"
    )
    rules: list[Rule] = Field(
        default_factory=list, description="compose / inverse / symmetric / inherit rules"
    )
    max_hops: int = Field(
        default=4, ge=1, description="no derived fact needs more rule applications than this"
    )
    names: NamesSpec = Field(default_factory=NamesSpec, description="entity naming")
    sizes: dict[Name, SizeSpec] = Field(description="size presets (at least 'small' and 'large')")

    @model_validator(mode="after")
    def _semantic(self) -> GraphSpec:
        from ksmith.spec.graph_checks import check_graph

        check_graph(self)
        return self

    # -- helpers used by the world builder and by data core B ---------------------------------

    def node_type(self, level: str) -> str:
        """The node type of a level (the level name if none is declared)."""
        return self.hierarchy.node_types.get(level, level)

    def relation_names(self) -> list[str]:
        """The hierarchy relation first, then the declared relations in spec order."""
        return [self.hierarchy.relation, *self.relations]

    def templates(self, relation: str) -> Templates:
        """Templates of any relation, the hierarchy relation included."""
        if relation == self.hierarchy.relation:
            return self.hierarchy.templates
        return self.relations[relation].templates

    def inverse_pairs(self) -> list[tuple[str, str]]:
        """Every (relation, inverse) pair, from relation flags and inverse rules, both ways."""
        pairs: set[tuple[str, str]] = set()
        for name, rel in self.relations.items():
            if rel.inverse:
                pairs |= {(name, rel.inverse), (rel.inverse, name)}
        for rule in self.rules:
            if isinstance(rule, InverseRule):
                pairs |= {(rule.relation, rule.inverse), (rule.inverse, rule.relation)}
        return sorted(pairs)

    def inherited(self) -> list[str]:
        """Relations whose values pass down the hierarchy."""
        flagged = {n for n, r in self.relations.items() if r.inherit}
        ruled = {
            r.relation for r in self.rules if isinstance(r, RelationRule) and r.kind == "inherit"
        }
        return [n for n in self.relations if n in flagged | ruled]

    def symmetric(self) -> list[str]:
        """Symmetric relations."""
        flagged = {n for n, r in self.relations.items() if r.symmetric}
        ruled = {
            r.relation for r in self.rules if isinstance(r, RelationRule) and r.kind == "symmetric"
        }
        return [n for n in self.relations if n in flagged | ruled]

    def compose_rules(self) -> list[ComposeRule]:
        """Composition rules, the hierarchy's own transitivity included."""
        rules = [r for r in self.rules if isinstance(r, ComposeRule)]
        h = self.hierarchy
        if h.transitive_hops:
            rules.insert(
                0,
                ComposeRule(
                    kind="compose",
                    name=f"{h.relation}_transitive",
                    premises=(h.relation, h.relation),
                    conclusion=h.relation,
                    max_hops=h.transitive_hops,
                ),
            )
        return rules
