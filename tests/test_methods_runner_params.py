"""Hyper-parameter resolution and request rows -> UpdateProblem."""

from __future__ import annotations

import pytest

from ksmith.errors import SpecError
from ksmith.methods import get_method
from ksmith.methods.params import default_specs_dir, resolve_params
from ksmith.methods.problem import build_problems


@pytest.fixture
def specs(tmp_path):
    (tmp_path / "methods").mkdir()
    return tmp_path


def write(specs, text, name="ft_l"):
    path = specs / "methods" / f"{name}.yaml"
    path.write_text(text)
    return path


SPEC = """\
version: 1
params:
  lr: 0.002
  steps: 7
  batch_size: 3
by_model_type:
  llama:
    steps: 9
    batch_size: 5
"""


def test_precedence_default_yaml_model_type_set(specs):
    write(specs, SPEC)
    ft_l = get_method("ft_l")
    default = ft_l.Params()
    p = resolve_params(ft_l, model_type="llama", overrides=["batch_size=11"], specs_dir=specs)
    assert p.weight_decay == default.weight_decay  # default
    assert p.lr == 0.002  # params:
    assert p.steps == 9  # by_model_type.llama beats params:
    assert p.batch_size == 11  # --set beats everything
    q = resolve_params(ft_l, model_type="gpt2", overrides=[], specs_dir=specs)
    assert (q.steps, q.batch_size) == (7, 3)  # no gpt2 block: params: only
    r = resolve_params(ft_l, model_type="llama", overrides=["layers=[0, -1]",
                       "norm_constraint=null"], specs_dir=specs)  # fmt: skip
    assert r.layers == (0, -1) and r.norm_constraint is None


def test_no_spec_file_means_code_defaults(specs):
    ft_m = get_method("ft_m")
    assert resolve_params(ft_m, model_type="gpt2", specs_dir=specs) == ft_m.Params()


def test_bad_key_names_file_and_field(specs):
    path = write(specs, SPEC.replace("  steps: 9", "  stepz: 9"))
    with pytest.raises(SpecError, match="unknown parameter 'stepz'") as e:
        resolve_params(get_method("ft_l"), model_type="llama", specs_dir=specs)
    assert e.value.file == str(path) and e.value.field == "by_model_type.llama.stepz"


def test_bad_value_names_file_and_field(specs):
    path = write(specs, SPEC.replace("lr: 0.002", "lr: -1"))
    with pytest.raises(SpecError) as e:
        resolve_params(get_method("ft_l"), model_type=None, specs_dir=specs)
    assert e.value.file == str(path) and e.value.field == "params.lr"
    assert "greater than 0" in str(e.value)


def test_bad_override_names_set(specs):
    ft_l = get_method("ft_l")
    with pytest.raises(SpecError, match="--set: field 'steps'") as e:
        resolve_params(ft_l, model_type=None, overrides=["steps=many"], specs_dir=specs)
    assert e.value.file == "--set"
    with pytest.raises(SpecError, match="expected key=value"):
        resolve_params(ft_l, model_type=None, overrides=["steps"], specs_dir=specs)


def test_bad_file_shape(specs):
    write(specs, "version: 2\nparams: {}\n")
    with pytest.raises(SpecError, match="field 'version'"):
        resolve_params(get_method("ft_l"), model_type=None, specs_dir=specs)
    write(specs, "version: 1\nparamz: {}\n")
    with pytest.raises(SpecError, match="unknown top-level key"):
        resolve_params(get_method("ft_l"), model_type=None, specs_dir=specs)


@pytest.mark.parametrize("name", ["ft_l", "ft_m", "lora", "ice"])
def test_shipped_specs_are_valid(name):
    root = default_specs_dir()
    assert root is not None and (root / "methods" / f"{name}.yaml").is_file()
    cls = get_method(name)
    for model_type in ("gpt2", "llama"):
        assert isinstance(resolve_params(cls, model_type=model_type), cls.Params)


def rows():
    def row(g, i, minus):
        return {
            "group": g, "request_id": f"g{g}.r{i}", "kind": "edit", "level": "leaf",
            "subject": f"s{i}", "relation": "eats", "object": "grass", "new_object": "meat",
            "prompt": f"s{i} eats", "plus_prompts": [f"s{i} eats", f"what does s{i} eat ?"],
            "plus_answers": ["meat", "meat"], "minus_prompts": minus,
            "minus_answers": ["fish"] * len(minus),
        }  # fmt: skip

    return [row(0, 0, ["a eats", "b eats"]), row(0, 1, ["b eats"]), row(1, 0, ["c eats"])]


def test_build_problems_groups_requests_and_views():
    probs = build_problems(rows(), target="new_object", mode="sequential", seed=3)
    assert sorted(probs) == [0, 1]
    p0 = probs[0]
    assert [r.request_id for r in p0.requests] == ["g0.r0", "g0.r1"]
    assert p0.requests[0].old_object == "grass" and p0.requests[0].target == "meat"
    assert [(t.prompt, t.request_id) for t in p0.plus][:2] == [
        ("s0 eats", "g0.r0"), ("what does s0 eat ?", "g0.r0")
    ]  # fmt: skip
    assert [t.prompt for t in p0.minus] == ["a eats", "b eats"]  # deduplicated
    assert (p0.mode, p0.seed, p0.kind) == ("sequential", 3, "edit")
    assert list(build_problems(rows(), target="new_object", groups=[1])) == [1]


def test_build_problems_errors():
    from ksmith.errors import KsmithError

    with pytest.raises(KsmithError, match=r"no group\(s\) \[4\]"):
        build_problems(rows(), target="new_object", groups=[4])
    bad = rows()
    bad[0]["plus_answers"] = ["meat"]
    with pytest.raises(KsmithError, match="2 plus_prompts but 1 plus_answers"):
        build_problems(bad, target="new_object")
    mixed = rows()
    mixed[1]["kind"] = "unlearn"
    with pytest.raises(KsmithError, match="expected one kind"):
        build_problems(mixed, target="new_object")
