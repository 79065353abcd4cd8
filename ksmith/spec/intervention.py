"""The intervention spec (``specs/interventions/*.yaml``): which updates to request and probe.

Data core B owns the semantics of this spec (sampling of requests, probe generation) and may
extend this file; it lives here so that every spec goes through one loader
(`ksmith.spec.load_spec`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from ksmith.spec.base import SemanticErrors, SpecModel

ProbeType = Literal[
    "direct", "paraphrase", "reverse", "multi_hop", "comparison", "contextual", "negation"
]
Format = Literal["mcq", "cloze", "qa"]
Scale = Annotated[int, Field(ge=1)]


class InterventionSpec(SpecModel):
    """Kinds, levels and scales of update requests, and the probes to derive for each."""

    kind: Literal["intervention"] = Field(default="intervention", description="spec kind")
    version: int = Field(ge=1, description="spec version")
    kinds: list[Literal["edit", "unlearn"]] = Field(
        min_length=1, description="update kinds: edit (s, r, o -> o') and/or unlearn (s, r, o -> -)"
    )
    levels: list[str] = Field(
        min_length=1, description="hierarchy levels to target (names from the graph spec)"
    )
    scales: list[Scale] = Field(min_length=1, description="numbers k of requests applied together")
    groups: Annotated[int, Field(ge=1)] | dict[Scale, Annotated[int, Field(ge=1)]] = Field(
        default=1, description="repetitions per scale: one number, or scale -> count"
    )
    seed: int = Field(description="seed for request sampling and new-object choice")
    probe_types: list[ProbeType] = Field(
        default_factory=lambda: ["direct", "paraphrase", "reverse", "multi_hop", "contextual"],
        min_length=1,
        description="probe types to emit",
    )
    formats: list[Format] = Field(
        default_factory=lambda: ["mcq", "cloze"], min_length=1, description="probe formats"
    )
    max_hops: int = Field(default=2, ge=1, description="largest hop count of multi_hop probes")
    contextual_per_request: int = Field(
        default=4, ge=0, description="Q- contextual probes per request"
    )
    retain_per_request: int = Field(
        default=4, ge=0, description="Q- retain (training-view) facts per request"
    )
    level_scales: dict[str, list[Scale]] = Field(
        default_factory=dict,
        description="per-level override of `scales` (level -> scales), e.g. fewer at the root, "
        "which has few nodes",
    )
    paraphrases_per_request: int = Field(
        default=2,
        ge=0,
        le=2,
        description="paraphrase probes per request: 1 asks the phrasing this fact is never "
        "trained in (type paraphrase), 2 also the relation's template no training line uses "
        "(type paraphrase_unseen)",
    )
    multi_hop_per_request: int = Field(
        default=2, ge=0, description="changed derived facts probed per request (multi_hop)"
    )
    comparison_per_request: int = Field(
        default=1, ge=0, description="comparison partners probed per request"
    )
    profile_per_level: int = Field(
        default=100,
        ge=0,
        description="requests per level in the capability-profile configs "
        "(`<domain>.profile.<level>`): a seeded sample of the world probed in every type and "
        "format, measured before any update; 0: none",
    )
    unlearn_target: Literal["neutral", "idk"] = Field(
        default="neutral",
        description="unlearning target: make the old object unlikely, or 'I don't know'",
    )

    @model_validator(mode="after")
    def _semantic(self) -> InterventionSpec:
        errors: list[tuple[str, str]] = []
        for key in ("kinds", "levels", "scales", "probe_types", "formats"):
            items = getattr(self, key)
            for i, v in enumerate(items):
                if items.index(v) != i:
                    errors.append((f"{key}.{i}", f"duplicate entry {v!r}"))
        for lv, scales in self.level_scales.items():
            if lv not in self.levels:
                errors.append(
                    (f"level_scales.{lv}", f"level '{lv}' is not in levels {self.levels}")
                )
            for i, sc in enumerate(scales):
                if sc not in self.scales:
                    errors.append(
                        (f"level_scales.{lv}.{i}", f"scale {sc} is not in scales {self.scales}")
                    )
        if isinstance(self.groups, dict):
            for s in self.groups:
                if s not in self.scales:
                    errors.append((f"groups.{s}", f"scale {s} is not in scales {self.scales}"))
            for s in self.scales:
                if s not in self.groups:
                    errors.append(("groups", f"missing a group count for scale {s}"))
        if errors:
            raise SemanticErrors(errors)
        return self

    def scales_for(self, level: str) -> list[int]:
        """The scales requested at `level` (its override, else `scales`)."""
        return list(self.level_scales.get(level, self.scales))

    def groups_for(self, scale: int) -> int:
        """Number of repetitions at `scale`."""
        return self.groups if isinstance(self.groups, int) else self.groups[scale]
