"""Limits on input size: what `validate` refuses before anything is built.

A spec that validates must not make `generate` run for hours or fill the disk, and a YAML file
must not expand into gigabytes when parsed. Every limit has a default meant for the shipped
`full` suite with room to spare (docs/specs.md, "Limits") and can be raised for one command
with an environment variable ``KSMITH_LIMIT_<FIELD>`` (``KSMITH_LIMIT_MAX_ENTITIES=5000000``).
"""

from __future__ import annotations

import os

from pydantic import Field, ValidationError

from ksmith.errors import SpecError
from ksmith.spec.base import SpecModel

ENV_PREFIX = "KSMITH_LIMIT_"


class Limits(SpecModel):
    """Upper bounds checked at `validate` (and so before `generate` builds anything)."""

    max_yaml_bytes: int = Field(
        default=16 * 2**20, ge=1, description="largest YAML file read, in bytes"
    )
    max_yaml_depth: int = Field(
        default=64, ge=1, description="deepest nesting of mappings and sequences in a YAML file"
    )
    max_yaml_nodes: int = Field(
        default=1_000_000,
        ge=1,
        description="most values in a YAML document with every alias (*anchor) expanded",
    )
    max_entities: int = Field(
        default=5_000_000,
        ge=1,
        description="most entities (hierarchy nodes, pool entities, closed values) in one world",
    )
    max_base_facts: int = Field(
        default=50_000_000,
        ge=1,
        description="most base facts one world may sample (upper bound computed from the spec)",
    )
    max_requests: int = Field(
        default=2_000_000, ge=1, description="most update requests in one suite (all configs)"
    )
    max_probes: int = Field(
        default=100_000_000,
        ge=1,
        description="most probe rows in one suite (upper bound computed from the spec)",
    )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Limits:
        """Defaults, each overridden by ``KSMITH_LIMIT_<FIELD>`` when set."""
        env = os.environ if environ is None else environ
        values: dict[str, str] = {}
        for name in cls.model_fields:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None:
                values[name] = raw.replace("_", "")
        try:
            return cls.model_validate(values)
        except ValidationError as e:
            err = e.errors()[0]
            var = ENV_PREFIX + str(err["loc"][0]).upper()
            raise SpecError(
                f"{err['msg']} (got {err.get('input')!r})", file=f"environment variable {var}"
            ) from None


def limits() -> Limits:
    """The limits in force (defaults and ``KSMITH_LIMIT_*`` environment variables)."""
    return Limits.from_env()


def env_name(field: str) -> str:
    """The environment variable that sets limit `field`."""
    return ENV_PREFIX + field.upper()
