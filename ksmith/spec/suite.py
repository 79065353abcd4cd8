"""The suite spec (``specs/suites/*.yaml``): graphs x interventions x seed -> one dataset.

Data core B owns the semantics of this spec (what a suite materializes) and may extend this
file; it lives here so that every spec goes through one loader (`ksmith.spec.load_spec`, and
`ksmith.spec.load_suite`, which also loads the files a suite names).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ksmith.spec.base import SemanticErrors, SpecModel


class SuiteGraph(SpecModel):
    """One graph of a suite: a graph spec file and the size preset to build."""

    path: str = Field(min_length=1, description="graph spec path, relative to the suite file")
    size: str = Field(default="small", description="size preset name from the graph spec")


class SuiteSpec(SpecModel):
    """A release: which graphs, which interventions, which seed."""

    kind: Literal["suite"] = Field(default="suite", description="spec kind")
    version: int = Field(ge=1, description="spec version")
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="suite name")
    seed: int = Field(description="seed of the release (combined with each spec's own)")
    description: str = Field(default="", description="free text for the dataset card")
    graphs: list[SuiteGraph] = Field(min_length=1, description="graph specs and their sizes")
    interventions: str = Field(
        min_length=1, description="intervention spec path, relative to the suite file"
    )

    @model_validator(mode="after")
    def _semantic(self) -> SuiteSpec:
        seen: dict[str, int] = {}
        errors = []
        for i, g in enumerate(self.graphs):
            if g.path in seen:
                errors.append((f"graphs.{i}.path", f"graph '{g.path}' is listed twice"))
            seen.setdefault(g.path, i)
        if errors:
            raise SemanticErrors(errors)
        return self
