"""params.yaml validation and the update matrix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ksmith.errors import KsmithError, SpecError
from ksmith.pipeline import cells_for, load_params, parse_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [
    f"biology.{k}.{lv}.k{s}"
    for k in ("edit", "unlearn")
    for lv in ("root", "intermediate", "leaf")
    for s in (1, 10, 100)
]


def test_repo_params_are_valid_and_cover_every_method():
    params = load_params(ROOT / "params.yaml")
    # every default method has an entry; the extra entries are registered methods run as an
    # experiment (README, "Methods")
    assert set(params.methods) <= set(params.overrides)
    from ksmith.methods import METHODS, load_builtin_methods

    load_builtin_methods()
    assert set(params.overrides) <= set(METHODS.names())
    kinds = {METHODS.get(m).kind for m in params.methods}
    assert kinds == {"edit", "unlearn"}


def _write(tmp_path: Path, **change) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw.update(change)
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"scales": [0]}, "scales"),
        ({"levels": ["trunk"]}, "levels.0"),
        ({"backend": "tpu"}, "backend"),
        ({"extra_knob": 1}, "extra_knob"),
    ],
)
def test_bad_params_name_file_and_field(tmp_path, change, field):
    with pytest.raises(SpecError) as e:
        load_params(_write(tmp_path, **change))
    assert str(tmp_path / "params.yaml") in str(e.value) and field in str(e.value)


def test_cells_for_method_kind_and_baseline():
    params = load_params(ROOT / "params.yaml")
    edit = cells_for(params, "rome", "edit", CONFIGS)
    assert len(edit) == 9 and {c.kind for c in edit} == {"edit"}
    assert edit[0].cell_id == "biology.edit.root.k1.s0"
    base = cells_for(params, None, None, CONFIGS)
    assert len(base) == 18 and {c.method for c in base} == {"none"}


def test_missing_config_is_an_error(tmp_path):
    params = load_params(_write(tmp_path, scales=[1, 1000]))
    with pytest.raises(KsmithError, match="k1000"):
        cells_for(params, "rome", "edit", CONFIGS)


def test_parse_config():
    assert parse_config("history.unlearn.leaf.k100") == ("history", "unlearn", "leaf", 100)
    with pytest.raises(KsmithError):
        parse_config("history.leaf")
