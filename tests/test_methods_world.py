"""End to end on a world model: generate a small world with the real generator, pretrain the
default architecture on it, then apply each editing / unlearning method with its shipped
defaults (``specs/methods/<name>.yaml``) to k = 10 leaf requests and evaluate.

Checks the issue's claim: ROME, MEMIT, AlphaEdit and FT-M reach efficacy >= 0.9 on k = 10 leaf
edits; GA, NPO and RMU reach forget efficacy >= 0.9 (the old answer no longer comes) on k = 10
leaf unlearn requests; locality is reported for each (logged, and attached to the test report
with ``record_property``).

The world is the biology graph spec with a smaller size preset (40 species instead of 400), so
the world model (2-layer Llama, width 128, word tokenizer: the default spec) learns it in about
a minute on one CPU core.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from ksmith.data.generate import generate_dataset
from ksmith.evaluate.runner import EvalOptions, evaluate
from ksmith.methods.commands import UpdateRun, update_from_dataset
from ksmith.world import load_world_spec
from ksmith.world.pretrain import pretrain

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
BIOLOGY = REPO / "specs" / "graphs" / "biology.yaml"
K = 10
EDIT_CONFIG = f"biology.edit.leaf.k{K}"
UNLEARN_CONFIG = f"biology.unlearn.leaf.k{K}"
THRESHOLD = 0.9

# The default world-model spec (llama, 2 layers, width 128, word tokenizer) with a budget for
# this small world: it stops as soon as every direct probe of the profile sample is answered.
# Only steps bound the run, so a loaded machine gets the same model, only later.
WORLD_OVERRIDES = (
    "max_steps=16000",
    "curriculum_steps=0",  # the plain recipe: it stops once this small world is known
    "weight_decay=0.0",
    "eval_every=250",
    "eval_sample=0",
    "thresholds={direct: 1.0}",
    "stop_early=true",
    "allow_below_threshold=true",  # test_world_model_knows_the_world says what it reached
)
# Biology's tree at 4 clades x 2 families x 5 species (40 species, ~2,800 corpus lines), with
# value pools scaled down to match.
WORLD_SIZE = {
    "branching": {"root": 4, "intermediate": 2, "leaf": 5},
    "pools": {"region": 12, "continent": 4},
}

EDIT_METHODS = ("rome", "memit", "alphaedit", "ft_m")
UNLEARN_METHODS = ("ga", "npo", "rmu")


def _write_suite(folder: Path) -> Path:
    """A suite over biology at a small size: k = 10 leaf edits and unlearning, one group."""
    graph = yaml.safe_load(BIOLOGY.read_text())
    graph["sizes"]["small"] = WORLD_SIZE
    (folder / "biology.yaml").write_text(yaml.safe_dump(graph, sort_keys=False))
    interventions = yaml.safe_load((REPO / "specs" / "interventions" / "default.yaml").read_text())
    interventions.update(kinds=["edit", "unlearn"], levels=["leaf"], scales=[K], groups=1)
    (folder / "interventions.yaml").write_text(yaml.safe_dump(interventions, sort_keys=False))
    suite = {
        "kind": "suite",
        "version": 1,
        "name": "world-tiny",
        "seed": 0,
        "graphs": [{"path": "biology.yaml", "size": "small"}],
        "interventions": "interventions.yaml",
    }
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(dataset dir, model dir, pretrain card block, cache root), built once per module."""
    root = tmp_path_factory.mktemp("world")
    specs = root / "specs"
    specs.mkdir()
    dataset = root / "dataset"
    generate_dataset(_write_suite(specs), dataset, progress=False, workers=1)
    model = root / "model"
    meta = pretrain(
        dataset, model, load_world_spec(None, WORLD_OVERRIDES), device="cpu", progress=False
    )
    with pytest.MonkeyPatch.context() as mp:
        # Second-moment statistics (ROME, MEMIT, AlphaEdit) are cached here, not in ~/.cache.
        mp.setenv("KSMITH_CACHE", str(root / "cache"))
        yield dataset, model, meta, root


def test_world_model_knows_the_world(world):
    _dataset, _model, meta, _root = world
    log.info(
        "world model: recall %s, mcq %s, %s steps",
        meta["recall"],
        meta["mcq_accuracy"],
        meta.get("steps"),
    )
    # A weak model would make every method check below meaningless: fail loudly here.
    assert meta["recall"] is not None and meta["recall"] >= THRESHOLD
    assert meta["mcq_accuracy"] is not None and meta["mcq_accuracy"] >= THRESHOLD


@pytest.mark.parametrize(
    "method, config",
    [(m, EDIT_CONFIG) for m in EDIT_METHODS] + [(m, UNLEARN_CONFIG) for m in UNLEARN_METHODS],
)
def test_method_reaches_efficacy_on_k10(world, method, config, record_property):
    dataset, model, _meta, root = world
    update = root / f"update-{method}"
    update_from_dataset(
        UpdateRun(
            model=str(model),
            dataset=str(dataset),
            config=config,
            method=method,
            out=str(update),
            device="cpu",
        )
    )
    options = EvalOptions(
        device="cpu", cache_dir=root / "before", fluency_prompts=0, drift_prompts=4, n_boot=20
    )
    result = evaluate(
        str(model), dataset, config, out=root / f"eval-{method}", update=update, options=options
    )
    metrics = result["metrics"]
    before = metrics["accuracy_before@cloze"]["value"]
    efficacy = metrics["efficacy@cloze"]
    locality = metrics["locality@cloze"]
    record_property("efficacy@cloze", efficacy["value"])
    record_property("locality@cloze", locality["value"])
    log.info(
        "%s on %s: efficacy@cloze %.3f (n=%d), locality@cloze %.3f (n=%d), accuracy before %.3f",
        method, config, efficacy["value"], efficacy["n"], locality["value"], locality["n"], before,
    )  # fmt: skip
    # one direct cloze probe per request whose fact has one value in each world (a request on
    # a many-valued fact is asked in mcq only: docs/specs.md, decidable answers)
    from ksmith.data import load_probes

    direct = [p for p in load_probes(dataset, config)
              if p["type"] == "direct" and p["format"] == "cloze"]  # fmt: skip
    assert efficacy["n"] == len(direct) and K // 2 <= len(direct) <= K
    # THRESHOLD on k = 10 probes allowed one miss; with fewer probes, still at most one
    misses = round((1 - efficacy["value"]) * efficacy["n"])
    assert misses <= round((1 - THRESHOLD) * K), f"{misses} of {efficacy['n']} missed"
    assert locality["value"] is not None and 0.0 <= locality["value"] <= 1.0
    assert locality["n"] > 0
