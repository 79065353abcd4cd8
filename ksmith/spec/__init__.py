"""The spec language: pydantic models for graph, intervention and suite specs, one loader.

spec = load_spec("specs/graphs/biology.yaml")       # GraphSpec, or SpecError naming the field
spec_warnings(path, spec)                            # valid, but maybe not meant
read_yaml(path); load_yaml(text, source)            # the one bounded safe YAML reader
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
from ksmith.spec.limits import Limits, limits
from ksmith.spec.loader import (
    SPEC_MODELS,
    LoadedSuite,
    SpecErrors,
    detect_kind,
    load_spec,
    load_suite,
    read_yaml,
    spec_warnings,
    validate_data,
)
from ksmith.spec.suite import SuiteGraph, SuiteSpec
from ksmith.spec.yamlio import load_yaml

__all__ = [
    "SPEC_MODELS",
    "ComposeRule",
    "GraphSpec",
    "HierarchyNode",
    "HierarchySpec",
    "InterventionSpec",
    "InverseRule",
    "Limits",
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
    "limits",
    "load_spec",
    "load_suite",
    "load_yaml",
    "read_yaml",
    "spec_fingerprint",
    "spec_warnings",
    "validate_data",
]
