"""The project explains itself (issue 13, part 4): docs/design.md and docs/specs.md exist, the
spec guide documents every field, and its worked example (a new domain) validates and
generates."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from ksmith.cli import main
from ksmith.data import list_configs, load_probes, load_requests, read_card
from ksmith.data.generate import generate_dataset
from ksmith.spec import SPEC_MODELS, GraphSpec, load_spec

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLE = ROOT / "specs" / "graphs" / "examples" / "chemistry.yaml"


def _models(model, seen=None):
    """`model` and every spec model nested in its fields (lists, unions, Annotated)."""
    seen = seen if seen is not None else {}
    if model.__name__ in seen:
        return seen
    seen[model.__name__] = model

    def walk(tp):
        if isinstance(tp, type) and hasattr(tp, "model_fields"):
            _models(tp, seen)
        for arg in getattr(tp, "__args__", ()) or ():
            walk(arg)
        for meta in getattr(tp, "__metadata__", ()) or ():
            walk(meta)

    for f in model.model_fields.values():
        walk(f.annotation)
    return seen


def test_design_and_spec_guides_exist_and_the_code_cites_them():
    design = (DOCS / "design.md").read_text()
    specs = (DOCS / "specs.md").read_text()
    for heading in ("## The unified problem", "## Vocabulary", "## Data flow"):
        assert heading in design
    assert "docs/world-model.md" in specs and "## Training corpus" in specs
    for path in (ROOT / "ksmith" / "spec").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"(?<!docs/)DESIGN\.md", text), path


def test_spec_guide_documents_every_field():
    """Every field of every spec model appears in docs/specs.md as `name`."""
    specs = (DOCS / "specs.md").read_text()
    missing = []
    for kind, model in SPEC_MODELS.items():
        for name, m in _models(model).items():
            for field in m.model_fields:
                if f"`{field}`" not in specs:
                    missing.append(f"{kind}: {name}.{field}")
    assert not missing, missing


def test_readme_commands_are_runnable_as_written():
    """`ksmith generate` requires --out; the README showed it without."""
    readme = (ROOT / "README.md").read_text()
    lines = [ln for ln in readme.splitlines() if "ksmith generate " in ln]
    assert lines and all("--out" in ln for ln in lines), lines
    assert "ksmith validate specs/" in readme  # and that command passes: test_spec_semantics


def test_spec_guide_documents_the_limits():
    from ksmith.spec.limits import Limits, env_name

    specs = (DOCS / "specs.md").read_text()
    for field in Limits.model_fields:
        assert env_name(field) in specs


def test_worked_example_validates(capsys):
    assert main(["validate", str(EXAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert "ok:" in out and not err
    spec = load_spec(EXAMPLE)
    assert isinstance(spec, GraphSpec) and spec.levels == ["family", "group", "compound"]
    # the guide quotes the example's file name
    assert "specs/graphs/examples/chemistry.yaml" in (DOCS / "specs.md").read_text()


@pytest.fixture(scope="module")
def chemistry(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chem")
    (root / "graphs").mkdir()
    shutil.copy(EXAMPLE, root / "graphs" / "chemistry.yaml")
    interventions = {
        "kind": "intervention", "version": 1, "kinds": ["edit", "unlearn"],
        "levels": ["family", "group", "compound"], "scales": [1, 5], "groups": 1, "seed": 3,
        "probe_types": ["direct", "paraphrase", "reverse", "multi_hop", "comparison",
                        "contextual", "negation"],
        "formats": ["mcq", "cloze", "qa"],
    }  # fmt: skip
    (root / "interventions").mkdir()
    (root / "interventions" / "chem.yaml").write_text(yaml.safe_dump(interventions))
    suite = {"kind": "suite", "version": 1, "name": "chem", "seed": 0,
             "graphs": [{"path": "../graphs/chemistry.yaml", "size": "small"}],
             "interventions": "../interventions/chem.yaml"}  # fmt: skip
    (root / "suites").mkdir()
    (root / "suites" / "chem.yaml").write_text(yaml.safe_dump(suite))
    assert main(["validate", str(root)]) == 0
    out = root / "ds"
    generate_dataset(root / "suites" / "chem.yaml", out, progress=False, workers=1)
    return out


def test_worked_example_generates(chemistry):
    configs = list_configs(chemistry)
    assert configs == sorted(
        f"chemistry.{k}.{lv}.k{s}"
        for k in ("edit", "unlearn")
        for lv in ("family", "group", "compound")
        for s in (1, 5)
    )
    for cfg in configs:
        probes = load_probes(chemistry, cfg)
        assert probes and len(load_requests(chemistry, cfg)) == int(cfg.rsplit("k", 1)[1])
    types = {p["type"] for p in load_probes(chemistry, "chemistry.edit.compound.k5")}
    assert {"direct", "paraphrase", "contextual", "negation"} <= types


def test_card_names_the_suites_own_levels(chemistry):
    """The card's field docs said `root`, `intermediate` or `leaf` whatever the spec said."""
    card = (chemistry / "README.md").read_text()
    assert "`family`, `group` or `compound`: level of the subject node" in card
    assert "`root`" not in card
    assert read_card(chemistry)["suite"] == "chem"


def test_mcq_option_counts_match_the_docs(chemistry):
    """docs/specs.md: object MCQ probes have 4 options, comparison and negation MCQ 2."""
    probes = load_probes(chemistry, "chemistry.edit.compound.k5")
    counts: dict[str, set[int]] = {}
    for p in probes:
        if p["format"] == "mcq":
            counts.setdefault(p["type"], set()).add(len(p["options"]))
    assert counts["negation"] == {2} and counts["direct"] == {4}
    assert counts.get("comparison", {2}) == {2}
    text = (DOCS / "specs.md").read_text()
    assert "4 options" in text and "two options" in text
