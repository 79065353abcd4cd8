"""The runner end to end with the real pieces: a tiny saved model, the hf backend, a delta."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import make_model, make_tokenizer

CONFIG = "biology.edit.leaf.k1"
FINGERPRINT = "a" * 64
SUBJECTS = ("bira", "tolan", "mesu", "karo")
FOODS = ["grass", "meat", "fish", "seeds"]


def tiny_probes():
    rows = []
    for g, (s, other) in enumerate([("bira", "tolan"), ("mesu", "karo")]):
        base = {
            "group": g,
            "request_id": f"g{g}.r0",
            "kind": "edit",
            "level": "leaf",
            "hops": 0,
            "relation": "eats",
            "pair_id": "",
            "support": [],
            "expect_after": "match",
        }
        rows += [
            base
            | {
                "id": f"g{g}.direct.cloze",
                "type": "direct",
                "qset": "Q+",
                "format": "cloze",
                "prompt": f"the {s} eats",
                "cue": "",
                "options": [],
                "answer_before": "grass",
                "answer_after": "meat",
                "subject": s,
                "object": "grass",
            },
            base
            | {
                "id": f"g{g}.direct.mcq",
                "type": "direct",
                "qset": "Q+",
                "format": "mcq",
                "prompt": f"what does the {s} eat ? A grass B meat C fish D seeds answer :",
                "cue": "",
                "options": FOODS,
                "answer_before": "grass",
                "answer_after": "meat",
                "subject": s,
                "object": "grass",
            },
            base
            | {
                "id": f"g{g}.para.qa",
                "type": "paraphrase",
                "qset": "Q+",
                "format": "qa",
                "prompt": f"what does the {s} eat ?",
                "cue": "",
                "options": [],
                "answer_before": "grass",
                "answer_after": "meat",
                "subject": s,
                "object": "grass",
            },
            base
            | {
                "id": f"g{g}.ctx.cloze",
                "type": "contextual",
                "qset": "Q-",
                "format": "cloze",
                "prompt": f"the {other} lives in the",
                "cue": "",
                "options": [],
                "answer_before": "forest",
                "answer_after": "forest",
                "subject": other,
                "object": "forest",
            },
            base
            | {
                "id": f"g{g}.ctx2.cloze",
                "type": "contextual",
                "qset": "Q-",
                "format": "cloze",
                "prompt": f"the {other} eats",
                "cue": "",
                "options": [],
                "answer_before": "fish",
                "answer_after": "fish",
                "subject": other,
                "object": "fish",
            },
        ]
    return rows


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch

    from ksmith.data.schema import PROBE_SCHEMA
    from ksmith.methods.artifacts import save_delta
    from ksmith.models import model_fingerprint

    root = tmp_path_factory.mktemp("hf_eval")
    model, tok = make_model("gpt2"), make_tokenizer()
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    probes = tiny_probes()
    ds = root / "dataset"
    (ds / "data" / CONFIG).mkdir(parents=True)
    card = {
        "ksmith": {
            "fingerprint": FINGERPRINT,
            "counts": {CONFIG: {"requests": 2, "probes": len(probes), "groups": 2}},
        }
    }
    (ds / "README.md").write_text("---\n" + yaml.safe_dump(card) + "---\n")
    pq.write_table(
        pa.Table.from_pylist(probes, schema=PROBE_SCHEMA), ds / "data" / CONFIG / "test.parquet"
    )
    up = root / "update"
    name = "transformer.h.1.mlp.c_proj.weight"
    shape = dict(model.named_parameters())[name].shape
    groups = []
    for g in (0, 1):
        (up / f"g{g}").mkdir(parents=True)
        gen = torch.Generator().manual_seed(g)
        save_delta(up / f"g{g}" / "delta.safetensors", {name: torch.randn(shape, generator=gen)})
        groups.append(
            {
                "group": g,
                "wall_seconds": 0.5,
                "peak_memory_bytes": 1,
                "changed_parameters": shape.numel(),
            }
        )
    (up / "update.json").write_text(
        json.dumps(
            {
                "method": "test-delta",
                "model": {"fingerprint": model_fingerprint(root / "model")},
                "dataset_fingerprint": FINGERPRINT,
                "config": CONFIG,
                "groups": groups,
            }
        )
    )
    return root, ds, up


@pytest.mark.slow
def test_runner_with_the_hf_backend_and_a_delta(setup):
    from ksmith.evaluate.runner import EvalOptions, evaluate

    root, ds, up = setup
    options = EvalOptions(
        device="cpu", cache_dir=root / "cache", n_boot=50, batch_size=4, fluency_tokens=8
    )
    result = evaluate(str(root / "model"), ds, CONFIG, out=root / "res", update=up, options=options)
    m = result["metrics"]
    assert m["drift_kl@next_token"]["value"] > 0  # a random delta moves the distribution
    assert m["drift_cka@hidden"]["n"] == 4
    assert m["cost.changed_parameters@update"]["value"] > 0
    preds = pq.read_table(root / "res" / "predictions.parquet").to_pylist()
    assert len(preds) == 2 * 2 * 6  # 2 stages x 2 groups x (2 cloze + mcq + cloze + qa x2)
    record = json.loads((root / "res" / "eval.json").read_text())
    assert not record["before_cache"]["hit"]

    baseline = evaluate(str(root / "model"), ds, CONFIG, out=root / "base", options=options)
    b = baseline["metrics"]
    assert json.loads((root / "base" / "eval.json").read_text())["before_cache"]["hit"]
    assert b["drift_kl@next_token"]["value"] == pytest.approx(0.0, abs=1e-9)
    assert b["drift_cka@hidden"]["value"] == pytest.approx(1.0)
    assert b["locality@cloze"]["value"] == 1.0
    # the base model's weights are unchanged by the evaluation: same before predictions
    rows = pq.read_table(root / "base" / "predictions.parquet").to_pylist()
    before = sorted(
        (r["probe_id"], r["mode"], r["prediction"]) for r in preds if r["stage"] == "before"
    )
    assert before == sorted(
        (r["probe_id"], r["mode"], r["prediction"]) for r in rows if r["stage"] == "before"
    )


def test_cli_evaluate_reports_errors_without_output(setup, tmp_path: Path):
    from ksmith.cli import main

    root, ds, _ = setup
    out = tmp_path / "res"
    code = main(
        [
            "evaluate",
            "--model",
            str(root / "model"),
            "--dataset",
            str(ds),
            "--config",
            "nope.edit.leaf.k1",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    assert code == 2
    assert not out.exists()
    code = main(
        [
            "evaluate",
            "--model",
            str(root / "model"),
            "--dataset",
            str(ds),
            "--config",
            CONFIG,
            "--out",
            str(out),
            "--cache-dir",
            str(root / "cache"),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    assert (out / "metrics.json").exists()


def test_saved_model_scores_probes_alike_with_and_without_prefix_sharing(setup):
    """The runner's backend, loaded from disk, takes the packed path and agrees with padding."""
    from ksmith.evaluate.hf import HFBackend

    root, _, _ = setup
    requests = []
    for row in tiny_probes():
        answers = row["options"] or [row["answer_before"], row["answer_after"]]
        requests += [(row["prompt"], " " + a) for a in answers]
    packed = HFBackend.from_path(root / "model", device="cpu", batch_size=4, pack_length=8)
    padded = HFBackend.from_path(root / "model", device="cpu", batch_size=4, pack_length=None)
    assert packed.tree_attention_supported()
    for a, b in zip(packed.score(requests), padded.score(requests), strict=True):
        assert a.loglikelihood == pytest.approx(b.loglikelihood, abs=1e-4)
        assert a.greedy_ids == b.greedy_ids
