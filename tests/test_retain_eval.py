"""An unlearn cell measured against the retain model (ksmith.evaluate.retain_eval,
unlearn_items, retain_metrics): tiny suite, tiny world and retain models, seconds each."""

from __future__ import annotations

import json

import pytest
from test_data_helpers import write_suite
from test_retain import TINY as RETAIN_TINY

from ksmith.data import list_configs, load_probes, load_requests
from ksmith.data.generate import generate_dataset
from ksmith.errors import KsmithError
from ksmith.evaluate import EvalOptions
from ksmith.evaluate.retain_eval import RETAIN_FILE
from ksmith.evaluate.retain_metrics import cell_metrics
from ksmith.evaluate.runner import evaluate
from ksmith.evaluate.unlearn_items import (
    ITEMS_FILE,
    read_items,
    relearn_attack,
    relearn_split,
)
from ksmith.world import load_world_spec
from ksmith.world.pretrain import pretrain
from ksmith.world.retain import pretrain_retain

# test_retain's tiny recipe, trained a little longer so that the models differ
TINY = [
    *(s for s in RETAIN_TINY if not s.startswith(("max_steps", "eval_every"))),
    "max_steps=40",
    "eval_every=40",
    "allow_below_threshold=true",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(dataset, world model, retain model, an unlearn config with groups of 5 requests)."""
    root = tmp_path_factory.mktemp("retain-eval")
    suite = write_suite(root / "specs", profile_per_level=10)
    ds = root / "ds"
    generate_dataset(suite, ds, progress=False, workers=1)
    spec = load_world_spec(None, TINY)
    pretrain(ds, root / "world", spec, device="cpu", progress=False)
    pretrain_retain(ds, root / "retain", spec, device="cpu", progress=False)
    config = next(c for c in list_configs(ds) if ".unlearn." in c and c.endswith(".k5"))
    return ds, root / "world", root / "retain", config


def _options(tmp_path):
    return EvalOptions(device="cpu", use_cache=False, n_boot=50, fluency_prompts=1, drift_prompts=2)


def test_the_retain_model_against_itself_is_indistinguishable(models, tmp_path):
    """The defining property of every comparison: the retain model measured against its own
    evaluation has forget quality 1, agreement 1, PrivLeak 0, the same relearning outcome."""
    ds, _, retain, config = models
    ref = tmp_path / "ref"
    evaluate(str(retain), ds, config, out=ref, options=_options(tmp_path))
    assert (ref / ITEMS_FILE).is_file()
    doc = json.loads((ref / RETAIN_FILE).read_text())
    asked = {(p["subject"], p["relation"], p["object"]) for p in load_probes(ds, config)}
    assert doc["removed"] and {tuple(t) for t in doc["removed"]} <= asked
    again = evaluate(str(retain), ds, config, out=tmp_path / "again", options=_options(tmp_path),
                     retain=ref)  # fmt: skip
    m = again["metrics"]
    assert m["forget_quality@teacher_forced"]["value"] == pytest.approx(1.0)
    for attack in ("loss", "min_k", "zlib"):
        assert m[f"privleak.{attack}@teacher_forced"]["value"] == pytest.approx(0.0, abs=1e-9)
    agreement = [k for k in m if k.startswith("retain_agreement")]
    assert {"retain_agreement@cloze", "retain_agreement.forget@mcq"} <= set(agreement)
    assert all(m[k]["value"] == 1.0 for k in agreement)
    assert m["relearn.gap@teacher_forced"]["value"] == 0.0
    assert m["model_utility@teacher_forced"]["value"] == pytest.approx(
        m["model_utility.retain_model@teacher_forced"]["value"]
    )
    for name in ("over_forgetting@cloze", "under_forgetting@cloze"):
        assert m[name]["value"] in (None, 0.0)


def test_the_world_model_is_measured_against_the_retain_model(models, tmp_path):
    """The world model (no update) is not the retain model: its rows differ, and every metric
    is recomputed from the stored rows alone."""
    ds, world, retain, config = models
    ref = tmp_path / "ref"
    evaluate(str(retain), ds, config, out=ref, options=_options(tmp_path))
    out = tmp_path / "world"
    got = evaluate(str(world), ds, config, out=out, options=_options(tmp_path), retain=ref)
    assert not (out / RETAIN_FILE).exists()  # only a retain model's evaluation names removed facts
    m = got["metrics"]
    assert 0.0 <= m["forget_quality@teacher_forced"]["value"] <= 1.0
    assert m["truth_ratio.forget@teacher_forced"]["n"] > 0
    items = read_items(out)
    assert {r["side"] for r in items} == {"forget", "retain", "relearn"}
    # the verify path: the same numbers from the files
    import pyarrow.parquet as pq

    removed = {tuple(t) for t in json.loads((ref / RETAIN_FILE).read_text())["removed"]}
    again = cell_metrics(
        items, read_items(ref), pq.read_table(out / "predictions.parquet").to_pylist(),
        pq.read_table(ref / "predictions.parquet").to_pylist(), load_probes(ds, config), removed,
        n_boot=50,
    )  # fmt: skip
    for name, value in again.items():
        assert m[name] == value, name


def test_a_retain_folder_of_another_config_is_refused(models, tmp_path):
    ds, world, retain, config = models
    other = next(c for c in list_configs(ds) if ".unlearn." in c and c != config)
    ref = tmp_path / "ref"
    evaluate(str(retain), ds, other, out=ref, options=_options(tmp_path))
    with pytest.raises(KsmithError, match="field 'config'"):
        evaluate(str(world), ds, config, out=tmp_path / "x", options=_options(tmp_path), retain=ref)
    assert not (tmp_path / "x").exists()
    with pytest.raises(KsmithError, match="retain.json"):
        evaluate(str(world), ds, config, out=tmp_path / "y", options=_options(tmp_path),
                 retain=tmp_path / "nothing")  # fmt: skip
    # the right config of another dataset, or a retain.json naming another model
    mine = tmp_path / "mine"
    evaluate(str(retain), ds, config, out=mine, options=_options(tmp_path))
    record = json.loads((mine / "eval.json").read_text())
    record["dataset"]["fingerprint"] = "0" * 64
    (mine / "eval.json").write_text(json.dumps(record))
    with pytest.raises(KsmithError, match="another dataset"):
        evaluate(str(world), ds, config, out=tmp_path / "z", options=_options(tmp_path),
                 retain=mine)  # fmt: skip
    evaluate(str(retain), ds, config, out=mine.with_name("m2"), options=_options(tmp_path))
    doc = json.loads((mine.with_name("m2") / RETAIN_FILE).read_text())
    doc["model_fingerprint"] = "0" * 64
    (mine.with_name("m2") / RETAIN_FILE).write_text(json.dumps(doc))
    with pytest.raises(KsmithError, match="model_fingerprint"):
        evaluate(str(world), ds, config, out=tmp_path / "w", options=_options(tmp_path),
                 retain=mine.with_name("m2"))  # fmt: skip
    assert not any((tmp_path / n).exists() for n in ("x", "y", "z", "w"))


def test_relearn_split_is_seeded_and_disjoint(models):
    ds, *_, config = models
    reqs = [r for r in load_requests(ds, config) if r["group"] == 0]
    attack, held = relearn_split(reqs, config, 0, seed=0)
    assert (attack, held) == relearn_split(list(reversed(reqs)), config, 0, seed=0)
    assert len(attack) == 1 and len(held) == len(reqs) - 1  # a quarter of 5, at least one
    assert not {r["request_id"] for r in attack} & {r["request_id"] for r in held}
    assert relearn_split(reqs[:1], config, 0, seed=0) == ([], [])


def test_relearning_raises_what_it_trains_on_and_leaves_the_model(models):
    """The attack fine-tunes a copy: the attack pairs' likelihood rises, the model given to it
    is unchanged."""
    import torch

    from ksmith.evaluate.hf import HFBackend
    from ksmith.models import load_model

    ds, world, _, config = models
    model, tok = load_model(str(world), device="cpu")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pairs = [(r["prompt"], r["object"]) for r in load_requests(ds, config)[:3]]
    a, b, c = relearn_attack(model, tok, pairs, lambda m: HFBackend(m, tok), pairs)
    assert [s.logprobs for s in a] == [s.logprobs for s in b]
    assert sum(sum(s.logprobs) for s in c) > sum(sum(s.logprobs) for s in b) + 1.0
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
