"""A model that barely knows the world gets a warning, logged and recorded in eval.json."""

from __future__ import annotations

import json
import logging

from ksmith.evaluate.knowledge import prior_knowledge
from ksmith.evaluate.runner import EvalOptions, evaluate
from tests.test_evaluate import CONFIG, FakeModel, fake_hooks, world_probes, write_dataset


def test_prior_knowledge_counts_direct_probes_only():
    probes = [{"id": "d", "type": "direct"}, {"id": "k", "type": "contextual"}]
    judged = [{"probe_id": "d", "match_before": False}, {"probe_id": "k", "match_before": True}]
    k = prior_knowledge(probes, judged, threshold=0.5)
    assert k["direct_accuracy_before"] == 0.0 and k["n"] == 1
    assert "doing nothing already looks like perfect unlearning" in k["warning"]
    judged[0]["match_before"] = True
    assert prior_knowledge(probes, judged)["warning"] is None


def run(tmp_path, hooks, out):
    return evaluate(
        "tiny-model", tmp_path / "dataset", CONFIG, out=tmp_path / out,
        options=EvalOptions(cache_dir=tmp_path / "cache", n_boot=50, use_cache=False),
        hooks=hooks,
    )  # fmt: skip


def test_evaluate_warns_and_records_when_the_model_barely_knows_the_world(tmp_path, caplog):
    probes = world_probes()
    write_dataset(tmp_path, probes)
    run(tmp_path, fake_hooks(probes, [], []), "knows")
    record = json.loads((tmp_path / "knows" / "eval.json").read_text())
    assert record["knowledge"]["direct_accuracy_before"] == 1.0
    assert record["knowledge"]["warning"] is None

    ignorant = fake_hooks(probes, [], [])
    ignorant.load_model = lambda path, device: (FakeModel({}), None)  # knows nothing
    with caplog.at_level(logging.WARNING):
        run(tmp_path, ignorant, "ignorant")
    record = json.loads((tmp_path / "ignorant" / "eval.json").read_text())
    assert record["knowledge"]["direct_accuracy_before"] == 0.0
    assert "barely knows this world" in record["knowledge"]["warning"]
    assert any("barely knows this world" in r.getMessage() for r in caplog.records)
