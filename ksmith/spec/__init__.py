"""The spec language: pydantic models for graph, intervention and suite specs, one loader.

spec = load_spec("specs/graphs/biology.yaml")       # GraphSpec, or SpecError naming the field
canonical_yaml(spec); spec_fingerprint(spec, {"format_version": 1, "seed": 0})
"""

from ksmith.spec.base import SemanticErrors, SpecModel
from ksmith.spec.canonical import canonical_yaml, spec_fingerprint
from ksmith.spec.graph import (
    ComposeRule,
    GraphSpec,
    HierarchyNode,
    HierarchySpec,
    InverseRule,
    NamesSpec,
    RelationRule,
    RelationSpec,
    SizeSpec,
    Templates,
    ValueTypeSpec,
)
from ksmith.spec.intervention import InterventionSpec
from ksmith.spec.loader import (
    SPEC_MODELS,
    LoadedSuite,
    SpecErrors,
    detect_kind,
    load_spec,
    load_suite,
    read_yaml,
    validate_data,
)
from ksmith.spec.suite import SuiteGraph, SuiteSpec

__all__ = [
    "SPEC_MODELS",
    "ComposeRule",
    "GraphSpec",
    "HierarchyNode",
    "HierarchySpec",
    "InterventionSpec",
    "InverseRule",
    "LoadedSuite",
    "NamesSpec",
    "RelationRule",
    "RelationSpec",
    "SemanticErrors",
    "SizeSpec",
    "SpecErrors",
    "SpecModel",
    "SuiteGraph",
    "SuiteSpec",
    "Templates",
    "ValueTypeSpec",
    "canonical_yaml",
    "detect_kind",
    "load_spec",
    "load_suite",
    "read_yaml",
    "spec_fingerprint",
    "validate_data",
]
