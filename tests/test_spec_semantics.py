"""Semantic checks at `validate`: accepted specs yield unambiguous probes (issue 13, part 2).

Graph-level cases live in tests/specs_bad (shared_cloze_template, shared_question_template,
reverse_is_other_cloze, compose_cycle, names_too_few, names_unknown_param); this file covers
warnings, suites, and the spec kinds of other packages.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ksmith.cli import main
from ksmith.graph.testing import _templates, tiny_spec_data
from ksmith.spec import load_spec
from ksmith.spec.graph_semantics import graph_warnings

ROOT = Path(__file__).resolve().parents[1]
BIOLOGY = ROOT / "specs" / "graphs" / "biology.yaml"


def _dump(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _intervention(**change) -> dict:
    spec = {"kind": "intervention", "version": 1, "kinds": ["edit"], "levels": ["leaf"],
            "scales": [1], "groups": 1, "seed": 1, "formats": ["cloze"]}  # fmt: skip
    spec.update(change)
    return spec


def _suite(folder: Path, graphs: list[str], interventions: str = "../interventions/i.yaml"):
    suite = {"kind": "suite", "version": 1, "name": "s", "seed": 0,
             "graphs": [{"path": g, "size": "small"} for g in graphs],
             "interventions": interventions}  # fmt: skip
    return _dump(folder / "suites" / "s.yaml", suite)


def _validate(capsys, *paths) -> tuple[int, str]:
    rc = main(["validate", *map(str, paths)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def test_shipped_specs_validate(capsys):
    """The README's first command: every kind of shipped spec (graphs, interventions, suites,
    methods, world) validates (exit 2, "15 of 23 file(s) invalid", before)."""
    rc = main(["validate", str(ROOT / "specs")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "warning" not in err
    for kind in ("graph", "intervention", "suite", "method rome", "world"):
        assert f"({kind} v1)" in out


def test_method_and_world_specs_are_checked_against_their_models(tmp_path, capsys):
    methods = tmp_path / "specs" / "methods"
    _dump(methods / "rome.yaml", {"version": 1, "params": {"layer": 0},
                                  "by_model_type": {"gpt2": {"v_lr": "fast"}}})  # fmt: skip
    _dump(methods / "no_such_method.yaml", {"version": 1, "params": {}})
    _dump(tmp_path / "specs" / "world" / "w.yaml", {"version": 1, "layers": 0})
    rc, err = _validate(capsys, tmp_path / "specs")
    assert rc == 2 and "3 of 3 file(s) invalid" in err
    assert f"{methods / 'rome.yaml'}: field 'by_model_type.gpt2.v_lr'" in err
    assert "unknown method 'no_such_method'" in err
    assert "w.yaml: field 'layers'" in err


def test_reverse_prompt_of_the_inverse_is_a_warning(tmp_path, capsys):
    """Reverse probes of lives_in that read as direct probes of its inverse home_of: the user
    may mean it (the probes duplicate, not contradict), so validate warns and passes."""
    data = tiny_spec_data()
    data["relations"]["lives_in"]["templates"]["reverse"] = ["{object} is home to"]
    path = _dump(tmp_path / "graphs" / "g.yaml", data)
    rc, err = _validate(capsys, path)
    assert rc == 0
    assert f"warning: {path}: field 'relations.lives_in.templates.reverse.0'" in err
    assert "inverse relation 'home_of'" in err


def test_small_closed_set_warns_alone_and_fails_a_suite_with_mcq(tmp_path, capsys):
    data = tiny_spec_data()
    data["value_types"]["food"]["values"] = ["meat", "grass"]
    g = _dump(tmp_path / "graphs" / "g.yaml", data)
    assert graph_warnings(load_spec(g)) == [
        ("value_types.food.values", graph_warnings(load_spec(g))[0][1])
    ]
    rc, err = _validate(capsys, g)
    assert rc == 0 and "field 'value_types.food.values'" in err and "2 value(s)" in err
    _dump(tmp_path / "interventions" / "i.yaml", _intervention(formats=["mcq", "cloze"]))
    suite = _suite(tmp_path, ["../graphs/g.yaml"])
    rc, err = _validate(capsys, suite)
    assert rc == 2
    assert f"{suite}: field 'graphs.0.path': relation 'eats'" in err and "fewer than 4" in err
    _dump(tmp_path / "interventions" / "i.yaml", _intervention(formats=["cloze", "qa"]))
    assert _validate(capsys, suite)[0] == 0


def test_scale_no_level_can_supply_is_found_at_validate(tmp_path, capsys):
    """Before: only `generate` found out, after building the world."""
    _dump(tmp_path / "graphs" / "g.yaml", tiny_spec_data())
    _dump(tmp_path / "interventions" / "i.yaml",
          _intervention(levels=["root", "leaf"], scales=[1, 5], groups={1: 1, 5: 1}))  # fmt: skip
    suite = _suite(tmp_path, ["../graphs/g.yaml"])
    rc, err = _validate(capsys, suite)
    assert rc == 2
    assert f"{suite}: field 'graphs.0.size'" in err
    assert "level 'root'" in err and "only 2 targetable" in err and "scale 5" in err
    assert "field 'scales'" in err  # the intervention spec's field, too
    # a per-level override makes it valid
    _dump(tmp_path / "interventions" / "i.yaml",
          _intervention(levels=["root", "leaf"], scales=[1, 5], groups={1: 1, 5: 1},
                        level_scales={"root": [1]}))  # fmt: skip
    assert _validate(capsys, suite)[0] == 0


def test_suite_paths_stay_in_the_spec_folder(tmp_path, capsys):
    specs = tmp_path / "specs"
    _dump(specs / "graphs" / "g.yaml", tiny_spec_data())
    _dump(specs / "interventions" / "i.yaml", _intervention())
    _dump(tmp_path / "elsewhere" / "g.yaml", tiny_spec_data())
    suite = _suite(specs, ["../../elsewhere/g.yaml"])
    rc, err = _validate(capsys, suite)
    assert rc == 2 and f"{suite}: field 'graphs.0.path'" in err and "leaves the suite's" in err
    # an absolute path is allowed, with a warning; the shipped layout (../graphs) is fine
    suite = _suite(specs, [str(tmp_path / "elsewhere" / "g.yaml")])
    rc, err = _validate(capsys, suite)
    assert rc == 0 and "warning:" in err and "absolute path" in err
    suite = _suite(specs, ["../graphs/g.yaml"])
    assert _validate(capsys, suite) == (0, "")


def test_errors_of_a_suites_graph_name_the_suite_field(tmp_path, capsys):
    data = tiny_spec_data()
    data["relations"]["eats"]["range"] = "drinks"
    _dump(tmp_path / "graphs" / "g.yaml", data)
    _dump(tmp_path / "interventions" / "i.yaml", _intervention())
    suite = _suite(tmp_path, ["../graphs/g.yaml"])
    rc, err = _validate(capsys, suite)
    assert rc == 2
    assert f"{suite}: field 'graphs.0.path': graph spec" in err
    assert "g.yaml: field 'relations.eats.range'" in err


def test_two_graphs_of_one_domain_are_refused_at_validate(tmp_path, capsys):
    _dump(tmp_path / "graphs" / "a.yaml", tiny_spec_data())
    _dump(tmp_path / "graphs" / "b.yaml", {**tiny_spec_data(seed=4), "name": "other"})
    _dump(tmp_path / "interventions" / "i.yaml", _intervention())
    suite = _suite(tmp_path, ["../graphs/a.yaml", "../graphs/b.yaml"])
    rc, err = _validate(capsys, suite)
    assert rc == 2 and f"{suite}: field 'graphs.1.path'" in err and "domain 'test'" in err


def test_grounded_rule_cycles_are_allowed():
    """A cycle through a sampled relation is bounded by max_hops and is not empty: accepted."""
    data = tiny_spec_data()
    data["relations"]["near"] = {"domain": ["leaf"], "range": "leaf", "cardinality": "many",
                                 "templates": _templates("is near")}  # fmt: skip
    data["rules"].append({"kind": "compose", "name": "near_t", "premises": ["near", "near"],
                          "conclusion": "near", "max_hops": 2})  # fmt: skip
    from ksmith.spec import GraphSpec

    GraphSpec.model_validate(data)
