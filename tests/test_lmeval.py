"""The lm-eval bridge: exported ksmith tasks round-trip through lm_eval.simple_evaluate."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ksmith.errors import KsmithError
from ksmith.evaluate.lmeval import capability_metrics, export_lmeval, task_name
from tests.conftest import make_model, make_tokenizer

CONFIG = "biology.unlearn.leaf.k1"


def write_dataset(root):
    from ksmith.data.schema import PROBE_SCHEMA

    base = {
        "group": 0,
        "request_id": "g0.r0",
        "kind": "unlearn",
        "level": "leaf",
        "hops": 0,
        "relation": "eats",
        "pair_id": "",
        "support": [],
        "subject": "bira",
        "object": "grass",
        "cue": "",
    }
    probes = [
        base
        | {
            "id": "a",
            "type": "direct",
            "qset": "Q+",
            "format": "cloze",
            "prompt": "the bira eats",
            "cue": "",
            "options": [],
            "answer_before": "grass",
            "answer_after": "grass",
            "expect_after": "avoid",
        },
        base
        | {
            "id": "b",
            "type": "contextual",
            "qset": "Q-",
            "format": "cloze",
            "prompt": "the tolan eats",
            "cue": "",
            "options": [],
            "answer_before": "fish",
            "answer_after": "fish",
            "expect_after": "match",
        },
        base
        | {
            "id": "c",
            "type": "contextual",
            "qset": "Q-",
            "format": "mcq",
            "prompt": "what does the tolan eat ? A grass B meat C fish D seeds answer :",
            "options": ["grass", "meat", "fish", "seeds"],
            "answer_before": "fish",
            "answer_after": "fish",
            "expect_after": "match",
        },
        base
        | {
            "id": "d",
            "type": "contextual",
            "qset": "Q-",
            "format": "qa",
            "prompt": "what does the tolan eat ?",
            "cue": "",
            "options": [],
            "answer_before": "fish",
            "answer_after": "fish",
            "expect_after": "match",
        },
        base
        | {
            "id": "e",
            "type": "contextual",
            "qset": "Q-",
            "format": "mcq",
            "prompt": "the mesu eats fish . true or false ?",
            "options": ["true", "false"],
            "answer_before": "false",
            "answer_after": "false",
            "expect_after": "match",
        },
    ]
    for fmt, options in (("mcq", ["true", "false"]), ("qa", [])):  # a reasoned probe
        probes.append(
            base
            | {
                "id": f"n.{fmt}",
                "type": "negation",
                "qset": "Q-",
                "format": fmt,
                "prompt": "True or false: the mesu eats fish.",
                "cue": "Answer:",
                "options": options,
                "answer_before": "false",
                "answer_after": "false",
                "expect_after": "match",
            }
        )
    ds = root / "dataset"
    (ds / "data" / CONFIG).mkdir(parents=True)
    card = {
        "ksmith": {
            "fingerprint": "b" * 64,
            "counts": {CONFIG: {"requests": 1, "probes": len(probes), "groups": 1}},
        }
    }
    (ds / "README.md").write_text("---\n" + yaml.safe_dump(card) + "---\n")
    pq.write_table(
        pa.Table.from_pylist(probes, schema=PROBE_SCHEMA), ds / "data" / CONFIG / "test.parquet"
    )
    return ds


def test_export_writes_one_task_per_config_and_format(tmp_path):
    ds = write_dataset(tmp_path)
    names = export_lmeval(ds, tmp_path / "tasks")
    assert names == [task_name(CONFIG, f) for f in ("mcq", "cloze", "qa", "reasoned")]
    assert names[0] == "ksmith_biology_unlearn_leaf_k1_mcq"
    cloze = yaml.safe_load((tmp_path / "tasks" / f"{names[1]}.yaml").read_text())
    assert cloze["output_type"] == "loglikelihood"
    assert cloze["doc_to_target"] == "{{' ' + answer_after}}"  # lm-eval adds no delimiter
    assert cloze["dataset_path"] == "parquet"
    assert ["expect_after", "==", "match"] in cloze["dataset_kwargs"]["filters"]
    assert ["cue", "==", ""] in cloze["dataset_kwargs"]["filters"]
    reasoned = yaml.safe_load((tmp_path / "tasks" / f"{names[3]}.yaml").read_text())
    assert reasoned["output_type"] == "generate_until"
    assert ["cue", "!=", ""] in reasoned["dataset_kwargs"]["filters"]
    group = yaml.safe_load((tmp_path / "tasks" / "ksmith.yaml").read_text())
    assert group["task"] == names
    before = export_lmeval(ds, tmp_path / "tasks_b", target="before")
    assert before[0].endswith("_mcq_before")
    with pytest.raises(KsmithError, match="no config"):
        export_lmeval(ds, tmp_path / "t2", configs=["nope"])
    assert not (tmp_path / "t2").exists()


def test_export_round_trips_through_lm_eval(tmp_path):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from ksmith.evaluate.backend import BACKENDS
    from ksmith.evaluate.hf import HFBackend  # noqa: F401  (registers hf)
    from ksmith.evaluate.scoring import judge_probes

    ds = write_dataset(tmp_path)
    names = export_lmeval(ds, tmp_path / "tasks")
    model, tok = make_model("gpt2", positions=256), make_tokenizer()  # room for a recall
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=4)
    out = simple_evaluate(
        model=lm,
        tasks=names,
        task_manager=TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False),
        bootstrap_iters=0,
        log_samples=False,
    )
    res = out["results"]
    assert out["n-samples"][names[1]]["effective"] == 1  # the avoid probe is left out
    assert out["n-samples"][names[0]]["effective"] == 2
    # lm-eval's accuracy equals ksmith's own scoring of the same probes
    from ksmith.data import load_probes

    probes = [p for p in load_probes(ds, CONFIG) if p["expect_after"] == "match" and not p["cue"]]
    js = judge_probes(BACKENDS.get("hf")(model, tok, batch_size=4), probes)
    mine = {}
    for j in js:
        mine.setdefault(j["mode"], []).append(float(j["match_after"]))
    assert res[names[0]]["acc,none"] == pytest.approx(sum(mine["mcq"]) / len(mine["mcq"]))
    assert res[names[1]]["acc,none"] == pytest.approx(sum(mine["cloze"]) / len(mine["cloze"]))
    assert "exact_match,strip" in res[names[2]]
    assert out["n-samples"][names[3]]["effective"] == 1  # the reasoned qa row only
    assert "exact_match,after_cue" in res[names[3]]
    metrics = capability_metrics(out)
    assert f"capability.{names[0]}.acc@lmeval" in metrics
    assert f"capability.{names[2]}.exact_match.strip@lmeval" in metrics


def test_run_lmeval_on_an_in_memory_model(tmp_path):
    from ksmith.evaluate.lmeval import run_lmeval

    ds = write_dataset(tmp_path)
    names = export_lmeval(ds, tmp_path / "tasks", configs=[CONFIG])
    model, tok = make_model("gpt2"), make_tokenizer()
    kw = {"include_path": tmp_path / "tasks", "include_defaults": False}
    out = run_lmeval(model, tok, names[:1], limit=1, **kw)
    assert out["n-samples"][names[0]]["effective"] == 1
    with pytest.raises(KsmithError, match="unknown lm-eval task"):
        run_lmeval(model, tok, ["no_such_task_xyz"], **kw)
    with pytest.raises(KsmithError, match="move it first"):
        run_lmeval(model, tok, names[:1], device="cuda:3", **kw)


def test_the_reasoned_task_reads_the_answer_after_the_last_cue():
    """lm-eval's regex filter with the exported pattern takes the word after the model's own
    cue: its recall may hold any words, a continuation without a cue is invalid."""
    from lm_eval.filters.extraction import RegexFilter

    from ksmith.evaluate.lmeval import ANSWER_AFTER_CUE

    f = RegexFilter(regex_pattern=ANSWER_AFTER_CUE, group_select=-1, fallback="[invalid]")
    got = f.apply(
        [
            [" Rile eats meat. Answer: true"],
            [" Rile eats fish. Tosu eats fish. Same answer? yes"],
            [" Rile eats meat. true"],
        ],
        [{}, {}, {}],
    )
    assert [list(r) for r in got] == [["true"], ["yes"], ["[invalid]"]]
