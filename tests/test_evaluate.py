"""Probe scoring and the evaluation runner, with a deterministic fake backend."""

from __future__ import annotations

import contextlib
import json
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ksmith.errors import KsmithError
from ksmith.evaluate.backend import Backend
from ksmith.evaluate.runner import EvalOptions, Hooks, evaluate
from ksmith.evaluate.scoring import (
    PREDICTION_COLUMNS,
    contains_match,
    exact_match,
    generation_budget,
    judge_probes,
    normalize_answer,
    stage_rows,
    with_prefix,
)

CONFIG = "bio.edit.leaf.k1"
FINGERPRINT = "f" * 64


# --- a tiny fake world ------------------------------------------------------------------------


class FakeModel:
    """Knows one answer per prompt; `state` says which weights it holds (base or g<i>)."""

    def __init__(self, knowledge):
        self.knowledge = dict(knowledge)
        self.state = "base"


class FakeBackend(Backend):
    """Deterministic scoring from the model's knowledge. A prompt ``"imagine X :: p"`` (an
    in-context prefix) answers X. Every call is logged with the model state."""

    def __init__(self, model, tokenizer=None, *, batch_size=1, log=None):
        self.model = model
        self.log = log if log is not None else []

    def _answer(self, prompt):
        if "::" in prompt:
            return prompt.split("::")[0].split()[-1]
        return self.model.knowledge.get(prompt, "unknown")

    def _note(self, method, n):
        self.log.append((self.model.state, method, n))

    def loglikelihood(self, requests):
        self._note("loglikelihood", len(requests))
        return [
            -1.0 if cont.strip() == self._answer(ctx) else -3.0 - 0.01 * len(cont)
            for ctx, cont in requests
        ]

    def token_accuracy(self, requests):
        self._note("token_accuracy", len(requests))
        return [1.0 if c.strip() == self._answer(p) else 0.0 for p, c in requests]

    def generate(self, prompts, max_new_tokens, stop=("\n",)):
        self._note("generate", len(prompts))
        out = []
        for p in prompts:
            text = f" {self._answer(p)}\nand then it ate the {self._answer(p)} again"
            for s in stop:
                if s in text:
                    text = text[: text.index(s)]
            out.append(text)
        return out

    def next_token_logprobs(self, prompts):
        self._note("next_token_logprobs", len(prompts))
        logits = np.zeros((len(prompts), 16))
        for i, p in enumerate(prompts):
            logits[i, zlib.crc32(self._answer(p).encode()) % 16] = 3.0
        return logits - np.log(np.exp(logits).sum(-1, keepdims=True))

    def hidden_states(self, prompts, layer):
        self._note("hidden_states", len(prompts))
        rows = []
        for p in prompts:
            seed = zlib.crc32(f"{p}|{self._answer(p)}".encode())
            rows.append(np.random.default_rng(seed).normal(size=8))
        return np.stack(rows)


def probe(
    pid,
    group,
    type_,
    qset,
    fmt,
    before,
    after,
    *,
    request=None,
    options=(),
    pair="",
    expect="match",
    prompt=None,
):
    return {
        "id": pid,
        "group": group,
        "request_id": request or f"g{group}.r0",
        "kind": "edit",
        "level": "leaf",
        "type": type_,
        "qset": qset,
        "format": fmt,
        "prompt": prompt or f"q {pid}",
        "cue": "",
        "options": list(options),
        "answer_before": before,
        "answer_after": after,
        "expect_after": expect,
        "hops": 0,
        "subject": "s",
        "relation": "r",
        "object": before,
        "pair_id": pair,
        "support": [],
    }


OPTS = ("grass", "meat", "fish", "seeds")


def world_probes():
    out = []
    for g in (0, 1):
        out += [
            probe(f"g{g}.d", g, "direct", "Q+", "cloze", "grass", "meat", pair=f"g{g}.pair"),
            probe(f"g{g}.p", g, "paraphrase", "Q+", "qa", "grass", "meat"),
            probe(
                f"g{g}.r",
                g,
                "reverse",
                "Q+",
                "mcq",
                "grass",
                "meat",
                options=OPTS,
                pair=f"g{g}.pair",
            ),
            probe(f"g{g}.k1", g, "contextual", "Q-", "cloze", "fish", "fish"),
            probe(f"g{g}.k2", g, "contextual", "Q-", "mcq", "seeds", "seeds", options=OPTS),
            probe(
                f"g{g}.n", g, "negation", "Q+", "mcq", "true", "false", options=("true", "false")
            ),
        ]
    return out


def knowledge(probes):
    return {p["prompt"]: p["answer_before"] for p in probes}


def write_dataset(root: Path, probes) -> Path:
    from ksmith.data.schema import PROBE_SCHEMA

    ds = root / "dataset"
    (ds / "data" / CONFIG).mkdir(parents=True)
    card = {
        "ksmith": {
            "fingerprint": FINGERPRINT,
            "suite": "tiny",
            "counts": {CONFIG: {"requests": 2, "probes": len(probes), "groups": 2}},
        }
    }
    import yaml

    (ds / "README.md").write_text("---\n" + yaml.safe_dump(card) + "---\n\ntiny\n")
    pq.write_table(
        pa.Table.from_pylist(probes, schema=PROBE_SCHEMA), ds / "data" / CONFIG / "test.parquet"
    )
    return ds


def write_update(root: Path, probes, *, fingerprint=FINGERPRINT) -> Path:
    """A fake update folder: per group, the Q+ prompts whose answer becomes answer_after."""
    up = root / "update"
    up.mkdir()
    groups = [
        {"group": g, "wall_seconds": 1.0 + g, "peak_memory_bytes": 1000, "changed_parameters": 10}
        for g in (0, 1)
    ]
    (up / "update.json").write_text(
        json.dumps(
            {
                "method": "fake",
                "model": {"fingerprint": "model:tiny-model"},  # fake_hooks' fingerprint
                "dataset_fingerprint": fingerprint,
                "config": CONFIG,
                "groups": groups,
            }
        )
    )
    for g in (0, 1):
        (up / f"g{g}").mkdir()
        changes = {
            p["prompt"]: p["answer_after"] for p in probes if p["group"] == g and p["qset"] == "Q+"
        }
        (up / f"g{g}" / "changes.json").write_text(json.dumps(changes))
    return up


@contextlib.contextmanager
def fake_applied_update(model, update_dir, group):
    changes = json.loads((Path(update_dir) / f"g{group}" / "changes.json").read_text())
    saved = dict(model.knowledge)
    model.knowledge.update(changes)
    model.state = f"g{group}"
    try:
        yield model, {}
    finally:
        model.knowledge, model.state = saved, "base"


def fake_hooks(probes, calls, loads, *, applied=fake_applied_update):
    from ksmith.data import load_probes, read_card
    from ksmith.methods.artifacts import read_update

    def load_model(path, device):
        loads.append(path)
        return FakeModel(knowledge(probes)), None

    return Hooks(
        load_model=load_model,
        model_fingerprint=lambda path: f"model:{path}",
        make_backend=lambda model, tok, options: FakeBackend(model, log=calls),
        applied_update=applied,
        read_update=read_update,
        load_probes=load_probes,
        read_card=read_card,
        run_lmeval=lambda model, tok, tasks, **kw: {
            "results": {t: {"alias": t, "acc,none": 0.5, "acc_stderr,none": 0.1} for t in tasks},
            "higher_is_better": {t: {"acc": True} for t in tasks},
            "n-samples": {t: {"effective": 10} for t in tasks},
        },
    )


# --- scoring ------------------------------------------------------------------------------


def test_normalization_and_matching():
    assert normalize_answer("  The Grass! ") == "grass"
    assert exact_match("the grass.", "Grass")
    assert not exact_match("green grass", "grass")
    assert contains_match("it eats green grass daily", "grass")
    assert not contains_match("grassland", "grass")
    assert generation_budget(["grass", "a much longer answer"]) % 8 == 0
    assert generation_budget(["a much longer answer"]) >= len(" a much longer answer")
    assert with_prefix("q", "imagine x ::") == "imagine x :: q"
    assert with_prefix("q", "ctx\n") == "ctx\nq"


def test_judge_probes_follows_the_scoring_conventions():
    ps = [
        probe("m", 0, "reverse", "Q+", "mcq", "grass", "meat", options=OPTS),
        probe("c", 0, "direct", "Q+", "cloze", "grass", "meat"),
        probe("q", 0, "paraphrase", "Q+", "qa", "grass", "meat"),
    ]
    model = FakeModel({"q m": "meat", "q c": "grass", "q q": "the meat"})
    js = {(j["probe_id"], j["mode"]): j for j in judge_probes(FakeBackend(model), ps)}
    assert set(js) == {("m", "mcq"), ("c", "cloze"), ("q", "gen_exact"), ("q", "gen_contains")}
    m = js[("m", "mcq")]
    assert m["prediction"] == "meat" and m["match_after"] and not m["match_before"]
    assert m["score_after"] == -1.0 and m["score_before"] < -3.0
    c = js[("c", "cloze")]
    assert c["prediction"] == "grass"  # greedy continuation cut to the answer's word count
    assert c["match_before"] and c["score_before"] == 1.0 and c["score_after"] == 0.0
    assert js[("q", "gen_exact")]["match_after"]  # "the meat" normalizes to "meat"
    assert js[("q", "gen_contains")]["prediction"] == "the meat"


def test_prefixes_reach_only_their_requests_probes():
    ps = [
        probe("a", 0, "direct", "Q+", "cloze", "grass", "meat", request="g0.r0"),
        probe("b", 0, "direct", "Q+", "cloze", "grass", "meat", request="g0.r1"),
    ]
    model = FakeModel({"q a": "grass", "q b": "grass"})
    js = judge_probes(FakeBackend(model), ps, prefixes={"g0.r0": "imagine meat ::"})
    by_id = {j["probe_id"]: j for j in js}
    assert by_id["a"]["match_after"] and not by_id["b"]["match_after"]


def test_stage_rows_changed_and_avoid():
    p = probe("u", 0, "direct", "Q+", "cloze", "grass", "grass", expect="avoid")
    before = judge_probes(FakeBackend(FakeModel({"q u": "grass"})), [p])
    after = judge_probes(FakeBackend(FakeModel({"q u": "meat"})), [p])
    rows = stage_rows([p], before, "before") + stage_rows([p], after, "after", before)
    assert [r["stage"] for r in rows] == ["before", "after"]
    assert set(rows[0]) == set(PREDICTION_COLUMNS)
    assert rows[0]["correct"] and not rows[0]["changed"]
    assert rows[1]["correct"] and rows[1]["changed"]  # the old answer no longer comes
    with pytest.raises(KsmithError, match="format"):
        judge_probes(FakeBackend(FakeModel({})), [dict(p, format="essay")])


# --- the runner ---------------------------------------------------------------------------


@pytest.fixture
def world(tmp_path):
    probes = world_probes()
    return probes, write_dataset(tmp_path, probes), write_update(tmp_path, probes)


def run(world, tmp_path, out, calls, loads, *, update=True, **opts):
    probes, ds, up = world
    options = EvalOptions(cache_dir=tmp_path / "cache", n_boot=50, **opts)
    return evaluate(
        "tiny-model",
        ds,
        CONFIG,
        out=tmp_path / out,
        update=up if update else None,
        options=options,
        hooks=fake_hooks(probes, calls, loads),
    )


def test_runner_writes_predictions_metrics_and_record(world, tmp_path):
    calls, loads = [], []
    result = run(world, tmp_path, "res", calls, loads, lmeval_tasks=("toy",))
    out = tmp_path / "res"
    assert {p.name for p in out.iterdir()} >= {"predictions.parquet", "metrics.json", "eval.json"}
    preds = pq.read_table(out / "predictions.parquet").to_pylist()
    assert list(preds[0]) == list(PREDICTION_COLUMNS)
    n_rows = sum(2 if p["format"] == "qa" else 1 for p in world[0])
    assert len(preds) == 2 * n_rows
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(result))
    assert {"config", "method", "kind", "level", "scale", "metrics"} <= set(metrics)
    assert (metrics["kind"], metrics["level"], metrics["scale"]) == ("edit", "leaf", 1)
    m = metrics["metrics"]
    assert m["efficacy@cloze"]["value"] == 1.0
    assert m["generalization@gen_exact"]["value"] == 1.0
    assert m["propagation.reverse@mcq"]["value"] == 1.0
    assert m["negation@mcq"]["value"] == 1.0
    assert m["locality@cloze"]["value"] == 1.0 and m["ccr@mcq"]["value"] == 0.0
    assert m["conflict_rate@mixed"]["value"] == 0.0
    assert m["drift_kl@next_token"]["value"] == pytest.approx(0.0)  # Q- answers unchanged
    assert m["fluency@generation"]["n"] == 2  # one direct non-mcq prompt per group
    assert m["cost.wall_seconds@update"]["value"] == 1.5
    assert m["capability.toy.acc@lmeval"]["value"] == 0.5
    record = json.loads((out / "eval.json").read_text())
    assert record["before_cache"]["hit"] is False
    assert record["method"] == "fake" and record["dataset"]["fingerprint"] == FINGERPRINT
    assert (out / ".ksmith-output").exists()
    assert {s for s, _, _ in calls} == {"base", "g0", "g1"}


def test_before_stage_is_cached(world, tmp_path):
    calls, loads = [], []
    first = run(world, tmp_path, "a", calls, loads)
    calls.clear()
    second = run(world, tmp_path, "b", calls, loads)
    assert calls and all(state != "base" for state, _, _ in calls)  # before not recomputed
    assert first == second
    assert json.loads((tmp_path / "b" / "eval.json").read_text())["before_cache"]["hit"]
    before = [
        r
        for r in pq.read_table(tmp_path / "a" / "predictions.parquet").to_pylist()
        if r["stage"] == "before"
    ]
    again = [
        r
        for r in pq.read_table(tmp_path / "b" / "predictions.parquet").to_pylist()
        if r["stage"] == "before"
    ]
    assert before == again
    # No update and a cache hit: the model is never even loaded.
    calls.clear()
    loads.clear()
    run(world, tmp_path, "c", calls, loads, update=False)
    assert calls == [] and loads == []


def test_no_update_baseline_has_the_same_shape(world, tmp_path):
    calls, loads = [], []
    with_update = run(world, tmp_path, "u", calls, loads)
    baseline = run(world, tmp_path, "n", calls, loads, update=False)
    assert set(baseline["metrics"]) == set(with_update["metrics"])
    m = baseline["metrics"]
    assert baseline["method"] == "none"
    assert m["efficacy@cloze"]["value"] == 0.0  # nobody told the model about "meat"
    assert m["locality@cloze"]["value"] == 1.0
    assert m["drift_kl@next_token"]["value"] == 0.0
    assert m["drift_cka@hidden"]["value"] == pytest.approx(1.0)
    assert m["cost.changed_parameters@update"]["value"] == 0.0
    preds = pq.read_table(tmp_path / "n" / "predictions.parquet").to_pylist()
    after = {(r["probe_id"], r["mode"]): r["prediction"] for r in preds if r["stage"] == "after"}
    before = {(r["probe_id"], r["mode"]): r["prediction"] for r in preds if r["stage"] == "before"}
    assert after == before


def test_failure_leaves_no_partial_output(world, tmp_path):
    calls, loads = [], []
    run(world, tmp_path, "res", calls, loads)
    snapshot = (tmp_path / "res" / "metrics.json").read_text()

    @contextlib.contextmanager
    def broken(model, update_dir, group):
        if group == 1:
            raise KsmithError("group 1 is corrupt")
        with fake_applied_update(model, update_dir, group) as pair:
            yield pair

    probes, ds, up = world
    for out in ("res", "fresh"):
        with pytest.raises(KsmithError, match="corrupt"):
            evaluate(
                "tiny-model",
                ds,
                CONFIG,
                out=tmp_path / out,
                update=up,
                options=EvalOptions(cache_dir=tmp_path / "cache", n_boot=50),
                hooks=fake_hooks(probes, calls, loads, applied=broken),
            )
    assert (tmp_path / "res" / "metrics.json").read_text() == snapshot
    assert not (tmp_path / "fresh").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_update_for_another_dataset_is_rejected(world, tmp_path):
    probes, ds, _ = world
    other = tmp_path / "other"
    other.mkdir()
    up = write_update(other, probes, fingerprint="0" * 64)
    with pytest.raises(KsmithError, match="dataset_fingerprint"):
        evaluate(
            "tiny-model",
            ds,
            CONFIG,
            out=tmp_path / "x",
            update=up,
            options=EvalOptions(cache_dir=tmp_path / "cache"),
            hooks=fake_hooks(probes, [], []),
        )
    assert not (tmp_path / "x").exists()


# --- reasoned probes (dataset format 5) ---------------------------------------------------------


class Recaller(Backend):
    """A model that stores "Rile eats <food>" and answers a true/false question by comparing
    the statement with the recall written before the cue (no recall: it cannot tell, and says
    false): the behaviour Allen-Zhu & Li Part 3.2 train with a chain of thought."""

    def __init__(self, food):
        self.food = food
        self.recalls: list[tuple[tuple[str, ...], int, tuple[str, ...]]] = []

    def _answer(self, ctx):
        parts = ctx.split("Rile eats ")
        if not ctx.endswith(" Answer:") or len(parts) < 3:
            return "false"
        stated, recalled = parts[1].split(".")[0], parts[2].split(".")[0]
        true = (stated == recalled) != (" not " in parts[0] + parts[1])
        return "true" if true else "false"

    def loglikelihood(self, requests):
        return [-1.0 if c == " " + self._answer(p) else -4.0 for p, c in requests]

    def token_accuracy(self, requests):
        return [1.0 if c == " " + self._answer(p) else 0.0 for p, c in requests]

    def generate(self, prompts, max_new_tokens, stop=("\n",)):
        if "Answer:" in stop:  # the recall: decoded with a word tokenizer's spacing
            self.recalls.append((tuple(prompts), max_new_tokens, tuple(stop)))
            return [f"Rile  eats {self.food}. " for _ in prompts]
        return [" " + self._answer(p) for p in prompts]


def test_reasoned_probes_are_scored_after_the_models_own_recall():
    from ksmith.evaluate.scoring import REASON_TOKENS, reasoned_prompts

    stmt = "True or false: Rile eats meat."
    probes = [
        probe("n.mcq", 0, "negation", "Q+", "mcq", "true", "false", options=("true", "false"),
              prompt=stmt),
        probe("n.qa", 0, "negation", "Q+", "qa", "true", "false", prompt=stmt),
        probe("d.qa", 0, "direct", "Q+", "qa", "meat", "grass", prompt="Rile eats"),
    ]  # fmt: skip
    for p in probes[:2]:
        p["cue"] = "Answer:"
    before, after = Recaller("meat"), Recaller("grass")  # after an edit of Rile's diet
    for backend, right in ((before, "true"), (after, "false")):
        judged = judge_probes(backend, probes)
        preds = {(j["probe_id"], j["mode"]): j["prediction"] for j in judged}
        assert preds[("n.mcq", "mcq")] == right and preds[("n.qa", "gen_exact")] == right
        # one recall for the two formats' shared prompt; the direct probe is not reasoned
        assert backend.recalls == [((stmt,), REASON_TOKENS, ("Answer:", "\n"))]
    # the prompt scored: prompt, the recall in single spaces, the cue (also with no recall)
    assert reasoned_prompts(before, [stmt, "x"], ["Answer:", ""]) == [
        f"{stmt} Rile eats meat. Answer:",
        "x",
    ]

    short = Recaller("meat")
    short.max_length = 40  # a tiny model's window: half of it for the recall
    reasoned_prompts(short, [stmt], ["Answer:"])
    assert short.recalls[0][1] == 20

    class Silent(Recaller):
        def generate(self, prompts, max_new_tokens, stop=("\n",)):
            return ["" for _ in prompts]

    assert reasoned_prompts(Silent("meat"), [stmt], ["Answer:"]) == [f"{stmt} Answer:"]
    with pytest.raises(KsmithError, match="1 cues for 2 prompts"):
        reasoned_prompts(before, [stmt, stmt], ["Answer:"])


def test_a_generated_recall_is_written_as_the_corpus_writes_it():
    """The word tokenizer decodes new tokens without their leading space; the reasoned
    prompt re-joins them with single spaces, so prompt + recall + cue is the corpus line's
    own prefix, token for token."""
    from ksmith.world.tokenizer import train_tokenizer

    line = "True or false: Rile is not a kind of Ledafelida. Rile is a kind of Ledafelida. Answer: false"
    prompt = "True or false: Rile is not a kind of Ledafelida."
    tok = train_tokenizer([line])
    ids = tok(line, add_special_tokens=False)["input_ids"]
    head = len(tok(prompt, add_special_tokens=False)["input_ids"])
    cue = len(tok(" Answer: false", add_special_tokens=False)["input_ids"])
    written = tok.decode(ids[head:-cue], skip_special_tokens=True)

    class Decoded(Recaller):
        def generate(self, prompts, max_new_tokens, stop=("\n",)):
            return [written for _ in prompts]

    from ksmith.evaluate.scoring import reasoned_prompts

    (reasoned,) = reasoned_prompts(Decoded("meat"), [prompt], ["Answer:"])
    assert reasoned + " false" == line
    assert tok(reasoned, add_special_tokens=False)["input_ids"] == ids[:-1]
