"""The graphs a dataset was generated from, rebuilt: each graph's spec, size and corpus seed.

A dataset's `spec.yaml` is its resolved suite spec (contracts §1), so the worlds, the corpus
recipe and every draw can be rebuilt from the dataset folder alone. Used by the retain model
(`ksmith.world.retain`), the trained editors' split (`ksmith.methods.trained.split`) and the
decidability check (tests/decidable.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ksmith.errors import KsmithError
from ksmith.spec.yamlio import read_yaml


@dataclass(frozen=True)
class DatasetGraph:
    """One graph of a dataset, rebuilt from its `spec.yaml`: the world and the corpus seed."""

    domain: str
    spec: Any  # GraphSpec
    size: str
    corpus_seed: int


def dataset_graphs(
    dataset_dir: str | Path, suite: str | Path | None = None, size: str | None = None
) -> list[DatasetGraph]:
    """The graphs of a dataset folder: from the suite spec it was generated from (`suite`,
    `size` as given to ``ksmith generate``; its fingerprint must be the dataset card's), or,
    without `suite`, from the dataset's resolved `spec.yaml` (contracts §1)."""
    from ksmith.intervene import derive_seed

    if suite is not None:
        from ksmith.data import read_card
        from ksmith.data.generate import build_suite_plan

        plan = build_suite_plan(suite, size)
        card = read_card(dataset_dir).get("fingerprint")
        if card != plan.fingerprint:
            raise KsmithError(
                f"{suite} (size {size or 'as declared'}) has fingerprint {plan.fingerprint[:12]}, "
                f"the dataset {dataset_dir} {str(card)[:12]}: not the suite it was generated from"
            )
        seed = plan.loaded.suite.seed
        return [
            DatasetGraph(g.domain, g, sz, derive_seed(seed, g.seed, "corpus"))
            for (g, _, _), sz in zip(plan.loaded.graphs, plan.sizes, strict=True)
        ]
    from ksmith.spec import GraphSpec

    path = Path(dataset_dir) / "spec.yaml"
    if not path.is_file():
        raise KsmithError(f"{path}: not found (a dataset folder written by ksmith generate)")
    at = "suite.seed"
    try:
        doc = read_yaml(path)
        seed = int(doc["suite"]["seed"])
        out = []
        for i, g in enumerate(doc["graphs"]):
            at = f"graphs.{i}"
            spec = GraphSpec.model_validate(g["spec"])
            out.append(DatasetGraph(spec.domain, spec, str(g["size"]),
                                    derive_seed(seed, spec.seed, "corpus")))  # fmt: skip
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        raise KsmithError(f"{path}: not a resolved suite spec (field {at}): {e}") from e
    return out
