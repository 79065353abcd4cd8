"""Spec language: loading, validation errors for people, the CLI, canonical form."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from ksmith.cli import main
from ksmith.errors import SpecError
from ksmith.graph.testing import tiny_spec, tiny_spec_data
from ksmith.spec import (
    GraphSpec,
    InterventionSpec,
    SpecErrors,
    SuiteSpec,
    canonical_yaml,
    load_spec,
    load_suite,
    spec_fingerprint,
)

ROOT = Path(__file__).resolve().parents[1]
GRAPHS = sorted((ROOT / "specs" / "graphs").glob("*.yaml"))
BAD = sorted((ROOT / "tests" / "specs_bad").glob("*.yaml"))


def _header(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("# ") and ":" in line:
            key, _, val = line[2:].partition(":")
            out[key.strip()] = val.strip()
    return out


def test_corpus_is_large_enough():
    assert len(BAD) >= 20


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_spec_is_rejected_with_file_and_field(path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in path.parent.iterdir())
    rc = main(["validate", str(path)])
    captured = capsys.readouterr()
    assert rc == 2
    err = captured.err
    head = _header(path)
    assert str(path) in err, err
    if head["expect-field"] != "-":
        assert f"field '{head['expect-field']}" in err, err
    if "expect" in head:
        assert head["expect"] in err, err
    assert not captured.out.startswith("ok")
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert sorted(p.name for p in path.parent.iterdir()) == before


@pytest.mark.parametrize("path", GRAPHS, ids=lambda p: p.stem)
def test_domain_specs_validate(path, capsys):
    assert main(["validate", str(path)]) == 0
    assert "ok:" in capsys.readouterr().out
    spec = load_spec(path)
    assert isinstance(spec, GraphSpec)
    assert {"small", "large"} <= set(spec.sizes)


def test_four_domains():
    assert {p.stem for p in GRAPHS} >= {"biology", "economics", "history", "physics"}


def test_validate_reports_every_error(tmp_path, capsys):
    data = tiny_spec_data()
    data["relations"]["eats"]["range"] = "drinks"
    data["relations"]["lives_in"]["inverse"] = "nowhere"
    data["rules"][0]["premises"] = ["lives_in", "ghost"]
    p = tmp_path / "graphs" / "multi.yaml"
    p.parent.mkdir()
    data.pop("kind")  # kind from the folder name
    p.write_text(yaml.safe_dump(data))
    assert main(["validate", str(p), str(GRAPHS[0])]) == 2
    err = capsys.readouterr().err
    for field in ("relations.eats.range", "relations.lives_in.inverse", "rules.0.premises.1"):
        assert f"field '{field}'" in err
    assert "1 of 2 file(s) invalid" in err


def test_load_spec_raises_spec_errors(tmp_path):
    data = tiny_spec_data()
    data["relations"]["eats"]["cardinality"] = "single"
    p = tmp_path / "x.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecErrors) as ei:
        load_spec(p)
    e = ei.value
    assert isinstance(e, SpecError)
    assert e.file == str(p) and e.field == "relations.eats.cardinality"
    assert "'one' or 'many'" in str(e)


def test_kind_from_folder_and_mismatch(tmp_path):
    data = tiny_spec_data()
    data.pop("kind")
    p = tmp_path / "elsewhere" / "g.yaml"
    p.parent.mkdir()
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match="cannot tell the spec kind"):
        load_spec(p)
    assert isinstance(load_spec(p, "graph"), GraphSpec)
    with pytest.raises(SpecError, match="expected a intervention spec"):
        load_spec(GRAPHS[0], "intervention")


def test_schema_command(capsys):
    for kind, title in (
        ("graph", "GraphSpec"),
        ("intervention", "InterventionSpec"),
        ("suite", "SuiteSpec"),
    ):
        assert main(["schema", "--kind", kind]) == 0
        schema = json.loads(capsys.readouterr().out)
        assert schema["title"] == title
        assert schema["additionalProperties"] is False
        for name, prop in schema["properties"].items():
            assert prop.get("description"), f"{kind}.{name} has no description"


def test_every_model_field_has_a_description():
    from ksmith.spec import loader

    seen = set()

    def walk(model):
        if model in seen:
            return
        seen.add(model)
        assert model.model_config.get("frozen") and model.model_config.get("extra") == "forbid"
        for name, f in model.model_fields.items():
            assert f.description, f"{model.__name__}.{name}"
            for arg in getattr(f.annotation, "__args__", ()) or ():
                if isinstance(arg, type) and hasattr(arg, "model_fields"):
                    walk(arg)
            if isinstance(f.annotation, type) and hasattr(f.annotation, "model_fields"):
                walk(f.annotation)

    for m in loader.SPEC_MODELS.values():
        walk(m)
    assert len(seen) >= 5


def test_specs_are_frozen():
    spec = tiny_spec()
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError
        spec.seed = 3  # type: ignore[misc]


def test_canonical_yaml_and_fingerprint_are_stable(tmp_path):
    spec = load_spec(GRAPHS[0])
    # same content, different layout and key order -> same canonical text
    data = yaml.safe_load(GRAPHS[0].read_text())
    shuffled = {k: data[k] for k in reversed(list(data))}
    p = tmp_path / "graphs" / "b.yaml"
    p.parent.mkdir()
    p.write_text(yaml.safe_dump(shuffled, sort_keys=False, default_flow_style=True))
    other = load_spec(p)
    assert canonical_yaml(spec) == canonical_yaml(other)
    fp = spec_fingerprint(spec, {"format_version": 1, "seed": 0})
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert fp == spec_fingerprint(other, {"seed": 0, "format_version": 1})
    assert fp != spec_fingerprint(spec, {"format_version": 2, "seed": 0})
    changed = tiny_spec(seed=1)
    assert spec_fingerprint(changed, {}) != spec_fingerprint(tiny_spec(seed=2), {})
    # canonical text round-trips to the same spec
    assert GraphSpec.model_validate(yaml.safe_load(canonical_yaml(spec))) == spec
    keys = [ln.split(":")[0] for ln in canonical_yaml(spec).splitlines() if ln[:1].isalpha()]
    assert keys == sorted(keys)


def test_intervention_and_suite(tmp_path):
    (tmp_path / "graphs").mkdir()
    (tmp_path / "interventions").mkdir()
    (tmp_path / "suites").mkdir()
    (tmp_path / "graphs" / "tiny.yaml").write_text(yaml.safe_dump(tiny_spec_data()))
    (tmp_path / "interventions" / "default.yaml").write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "kinds": ["edit", "unlearn"],
                "levels": ["root", "leaf"],
                "scales": [1, 10],
                "level_scales": {"root": [1]},  # the tiny world has 2 root nodes
                "groups": {1: 3, 10: 2},
                "seed": 5,
            }
        )
    )
    suite = tmp_path / "suites" / "s.yaml"
    suite.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "name": "s",
                "seed": 0,
                "graphs": [{"path": "../graphs/tiny.yaml", "size": "small"}],
                "interventions": "../interventions/default.yaml",
            }
        )
    )
    assert main(["validate", str(tmp_path)]) == 0
    loaded = load_suite(suite)
    assert isinstance(loaded.suite, SuiteSpec) and isinstance(
        loaded.interventions, InterventionSpec
    )
    assert loaded.interventions.groups_for(1) == 3 and loaded.interventions.groups_for(10) == 2
    assert loaded.graphs[0][0].name == "tiny" and loaded.graphs[0][1] == "small"
    # a suite whose size or level does not exist in the graph
    bad = tmp_path / "suites" / "bad.yaml"
    bad.write_text(suite.read_text().replace("size: small", "size: huge"))
    with pytest.raises(SpecErrors) as ei:
        load_spec(bad)
    assert ei.value.field == "graphs.0.size"
    (tmp_path / "interventions" / "default.yaml").write_text(
        yaml.safe_dump(
            {"version": 1, "kinds": ["edit"], "levels": ["twig"], "scales": [1], "seed": 5}
        )
    )
    with pytest.raises(SpecErrors, match="level 'twig' is not a level"):
        load_suite(suite)


def test_yaml_booleans_are_not_silently_strings(tmp_path):
    data = tiny_spec_data()
    p = tmp_path / "g.yaml"
    text = yaml.safe_dump(data).replace("suffix: ''", "suffix: on")
    text = text.replace("transitive_hops: 1", "transitive_hops: 1\n  suffixes: {leaf: on}")
    p.write_text(text)
    with pytest.raises(SpecErrors) as ei:
        load_spec(p)
    assert ei.value.field == "hierarchy.suffixes.leaf"


def test_cli_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "validate" in out and "schema" in out
    assert os.environ.get("KSMITH_NONEXISTENT") is None


def test_declaration_order_of_relations_is_part_of_the_fingerprint(tmp_path):
    """The world draws relations and value types in declaration order, so reordering them
    changes the world; the canonical text keeps that order (and so the fingerprint changes),
    and the canonical text of a spec rebuilds exactly its world."""
    from ksmith.graph import build_world

    data = tiny_spec_data(seed=5)
    swapped = dict(data)
    swapped["relations"] = dict(reversed(list(data["relations"].items())))
    swapped["value_types"] = dict(reversed(list(data["value_types"].items())))
    a, b = GraphSpec.model_validate(data), GraphSpec.model_validate(swapped)
    assert spec_fingerprint(a, {}) != spec_fingerprint(b, {})
    wa, wb = build_world(a), build_world(b)
    assert {f.triple for f in wa.facts} != {f.triple for f in wb.facts}  # the worlds differ
    for spec, world in ((a, wa), (b, wb)):
        again = GraphSpec.model_validate(yaml.safe_load(canonical_yaml(spec)))
        assert spec_fingerprint(again, {}) == spec_fingerprint(spec, {})
        assert [f.triple for f in build_world(again).facts] == [f.triple for f in world.facts]
    # inside a plain mapping (a dataset's resolved suite) the graph spec keeps its order too
    assert canonical_yaml({"graphs": [{"spec": b}]}) != canonical_yaml({"graphs": [{"spec": a}]})
