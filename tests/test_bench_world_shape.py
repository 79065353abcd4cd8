"""bench/world_shape.py's pure helpers: the equal-CPU step rule and the summary line."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ws():
    spec = importlib.util.spec_from_file_location(
        "bench_world_shape", ROOT / "bench" / "world_shape.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_equal_cpu_steps_gives_every_candidate_the_baselines_cpu(ws):
    # twice the cost per step: half the steps; four times: a quarter
    assert ws.equal_cpu_steps(13000, 0.02, 0.04) == 6500
    assert ws.equal_cpu_steps(13000, 0.02, 0.08) == 3200  # 3250 rounds to a multiple of 100
    assert ws.equal_cpu_steps(13000, 0.02, 0.02) == 13000
    # cheaper than the baseline: more steps; the CPU spent stays within half a multiple
    steps = ws.equal_cpu_steps(13000, 0.02, 0.015)
    assert abs(steps * 0.015 - 13000 * 0.02) <= 50 * 0.015
    # never below one multiple, whatever the cost
    assert ws.equal_cpu_steps(300, 0.01, 10.0) == 100
    assert ws.equal_cpu_steps(1000, 0.01, 0.02, multiple=1) == 500


@pytest.mark.parametrize("args", [(0, 0.1, 0.1), (100, 0.0, 0.1), (100, 0.1, -1.0)])
def test_equal_cpu_steps_rejects_non_positive_input(ws, args):
    with pytest.raises(ValueError):
        ws.equal_cpu_steps(*args)


def test_mean_profile_counts_unmeasured_targets_as_zero(ws):
    full = {t: 0.7 for t in ws.TARGETS} | {"fluency": 0.1, "contextual": 0.0}
    assert ws.mean_profile(full) == pytest.approx(0.7)  # only the targets count
    missing = dict(full) | {"comparison": None}
    del missing["reverse"]
    assert ws.mean_profile(missing) == pytest.approx(0.7 * 5 / 7)
    assert ws.per_cpu_minute(0.6, 120.0) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        ws.per_cpu_minute(0.6, 0.0)


def _run(ws, name, value, scale=1.0, cpu=200.0):
    return ws.Run(name, scale, 1000, 10, cpu, 5.0, {t: value for t in ws.TARGETS})


def test_summary_line_names_the_best_at_equal_cpu_and_its_ratio(ws):
    runs = [
        _run(ws, "2x128", 0.6),
        _run(ws, "2x256", 0.75),
        _run(ws, "4x256", 0.7),
        _run(ws, "4x256", 0.9, scale=2.0, cpu=400.0),  # more CPU: not part of the ratio
    ]
    line = ws.summary_line(runs)
    assert "\n" not in line
    fields = dict(part.split("=", 1) for part in line.split())
    assert line.startswith("ratio=")
    assert float(fields["ratio"]) == pytest.approx(0.75 / 0.6, abs=1e-3)
    assert fields["best"] == "2x256"
    assert float(fields["baseline_mean"]) == pytest.approx(0.6)
    assert fields["mean[4x256@2x]"] == "0.900" and fields["cpu_s[4x256@2x]"] == "400"
    rows = ws.table(runs).splitlines()
    assert len(rows) == 1 + len(runs) and rows[-1].startswith("4x256@2x")


def test_baseline_is_best_when_nothing_beats_it_and_is_required(ws):
    runs = [_run(ws, "2x128", 0.6), _run(ws, "2x256", 0.6), _run(ws, "4x256", 0.5)]
    assert ws.best_ratio(runs) == ("2x128", pytest.approx(1.0))
    with pytest.raises(ValueError, match="baseline"):
        ws.best_ratio([_run(ws, "2x256", 0.6)])


def test_candidates_are_valid_world_model_specs(ws):
    for name in ws.CANDIDATES:
        spec = ws._spec(name, max_steps=100)
        assert spec.hidden % spec.heads == 0
        layers, hidden = name.split("-")[0].split("x")
        assert (spec.layers, spec.hidden) == (int(layers), int(hidden))
    assert ws.CANDIDATES[ws.BASELINE] == {}  # the baseline is today's default recipe


def test_recipes_of_one_shape_share_a_cost_measurement(ws):
    key = lambda name: ws.cost_key(ws._spec(name))  # noqa: E731
    assert key("2x256") == key("2x256-lr3e-3")  # the learning rate costs nothing
    assert key("4x256") != key("4x256-b32")  # the batch does
    assert key("2x128") != key("4x128") != key("4x256")
