"""The update matrix: methods x kinds x levels x scales x seeds, over a generated dataset."""

from __future__ import annotations

from dataclasses import dataclass

from ksmith.errors import KsmithError
from ksmith.pipeline.params import PipelineParams


@dataclass(frozen=True)
class Cell:
    """One update-and-evaluate unit: a method applied to one dataset config with one seed."""

    method: str
    config: str  # dataset config, e.g. biology.edit.leaf.k10
    domain: str
    kind: str
    level: str
    scale: int
    seed: int

    @property
    def cell_id(self) -> str:
        return f"{self.config}.s{self.seed}"


def parse_config(config: str) -> tuple[str, str, str, int]:
    """`biology.edit.leaf.k10` -> ("biology", "edit", "leaf", 10)."""
    try:
        domain, kind, level, k = config.split(".")
        if not k.startswith("k"):
            raise ValueError
        return domain, kind, level, int(k[1:])
    except ValueError:
        raise KsmithError(
            f"not a probe config name: {config!r} (expected domain.kind.level.kN)"
        ) from None


def cells_for(
    params: PipelineParams, method: str | None, method_kind: str | None, configs: list[str]
) -> list[Cell]:
    """The cells of one method (or of the no-update baseline when `method` is None).

    Every (kind, level, scale) asked for must exist in the dataset for each of its domains: a
    params.yaml asking for a cell the suite did not generate is an error, not a silent skip.
    """
    parsed = {c: parse_config(c) for c in configs}
    domains = sorted({d for d, *_ in parsed.values()})
    kinds = [k for k in params.kinds if method_kind is None or k == method_kind]
    seeds = params.seeds if method is not None else [params.seeds[0]]
    cells = []
    for domain in domains:
        for kind in kinds:
            for level in params.levels:
                for scale in params.scales:
                    config = f"{domain}.{kind}.{level}.k{scale}"
                    if config not in parsed:
                        raise KsmithError(
                            f"params.yaml asks for {config}, which the dataset does not have; "
                            f"it has: {', '.join(sorted(parsed))}"
                        )
                    for seed in seeds:
                        cells.append(
                            Cell(method or "none", config, domain, kind, level, scale, seed)
                        )
    return cells
