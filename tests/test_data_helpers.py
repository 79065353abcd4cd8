"""Tiny suites for the data tests, written into a temporary folder (no tests here)."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIOLOGY = REPO / "specs" / "graphs" / "biology.yaml"


def write_suite(folder: Path, graphs: tuple[str, ...] = ("biology",), **intervention) -> Path:
    """A suite over small worlds (default: biology) with a small intervention spec
    (overridable)."""
    spec = {
        "kind": "intervention",
        "version": 1,
        "kinds": ["edit", "unlearn"],
        "levels": ["root", "leaf"],
        "scales": [1, 5],
        "groups": {1: 2, 5: 1},
        "seed": 7,
        "probe_types": [
            "direct",
            "paraphrase",
            "reverse",
            "multi_hop",
            "comparison",
            "contextual",
            "negation",
        ],
        "formats": ["mcq", "cloze", "qa"],
        "multi_hop_per_request": 3,
        "contextual_per_request": 2,
        "retain_per_request": 2,
    }
    spec.update(intervention)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "interventions.yaml").write_text(yaml.safe_dump(spec))
    suite = {
        "kind": "suite",
        "version": 1,
        "name": "tiny",
        "seed": 3,
        "graphs": [
            {"path": str(REPO / "specs" / "graphs" / f"{g}.yaml"), "size": "small"} for g in graphs
        ],
        "interventions": "interventions.yaml",
    }
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path
