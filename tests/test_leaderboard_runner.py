"""End to end with the real evaluator: `ksmith.evaluate.runner.evaluate` on a fake backend
writes the results folders, `submit` packs them, `verify` recomputes them and agrees."""

from __future__ import annotations

import contextlib
import json
import zlib
from pathlib import Path

import pytest
from leaderboard_fixtures import CONFIGS, FOODS, make_dataset

from ksmith.evaluate.backend import Backend
from ksmith.leaderboard import DatasetResolver, SubmitOptions, verify_all, write_submission
from ksmith.leaderboard.checks import BoardPolicy

runner = pytest.importorskip("ksmith.evaluate.runner")


def _hit(*parts) -> float:
    return zlib.crc32("/".join(map(str, parts)).encode()) / 2**32


class FakeModel:
    """A 'model' that is a prompt -> answer table (the base knows 90% of the facts)."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers

    def answer(self, prompt: str) -> str:
        return self.answers.get(prompt, "grass")


class FakeBackend(Backend):
    def __init__(self, model: FakeModel):
        self.model = model

    def loglikelihood(self, requests):
        return [
            0.0 if c.strip() == self.model.answer(p) else -1.0 - len(c) / 100 for p, c in requests
        ]

    def token_accuracy(self, requests):
        return [1.0 if c.strip() == self.model.answer(p) else 0.0 for p, c in requests]

    def generate(self, prompts, max_new_tokens, stop=("\n",)):
        return [" " + self.model.answer(p) + " ." for p in prompts]


def _base_answers(dataset: Path) -> dict[str, str]:
    from ksmith.data import load_probes

    out: dict[str, str] = {}
    for config in CONFIGS:
        for p in load_probes(dataset, config):
            wrong = next(f for f in FOODS if f != p["answer_before"])
            good = _hit("base", p["prompt"]) < 0.9
            out.setdefault(p["prompt"], p["answer_before"] if good else wrong)
    return out


def _updated(base: FakeModel, probes, group: int, skill: float) -> FakeModel:
    answers = dict(base.answers)
    for p in probes:
        if int(p["group"]) != group or p["qset"] != "Q+":
            continue
        if _hit("upd", p["id"]) < skill:
            answers[p["prompt"]] = p["answer_after"] if p["kind"] == "edit" else "nothing"
    for p in probes:  # collateral damage on some Q- prompts
        if int(p["group"]) == group and p["qset"] == "Q-" and _hit("cd", p["id"]) > skill:
            answers[p["prompt"]] = "insects"
    return FakeModel(answers)


def test_runner_outputs_submit_and_verify(tmp_path):
    from ksmith.data import load_probes, read_card

    ds = make_dataset(tmp_path / "dataset")
    base = FakeModel(_base_answers(ds))
    results = []
    for config in CONFIGS:
        probes = load_probes(ds, config)
        upd = tmp_path / f"upd-{config}"
        upd.mkdir()
        update_record = {
            "method": "fake",
            "params": {"lr": 1.0},
            "seed": 3,
            "wall_seconds": [0.5, 0.7],
            "peak_memory_bytes": [10, 12],
            "changed_parameters": [4, 4],
            "config": config,
            "model": {"fingerprint": "fakefp"},
            "dataset_fingerprint": read_card(ds)["fingerprint"],
        }
        (upd / "update.json").write_text(json.dumps(update_record))

        @contextlib.contextmanager
        def applied(model, update_dir, group, probes=probes):
            yield _updated(model, probes, group, 0.7), {}

        hooks = runner.Hooks(
            load_model=lambda path, device: (base, None),
            model_fingerprint=lambda path: "fakefp",
            make_backend=lambda model, tok, options: FakeBackend(model),
            applied_update=applied,
            read_update=lambda d: json.loads((Path(d) / "update.json").read_text()),
            load_probes=load_probes,
            read_card=read_card,
            run_lmeval=lambda *a, **k: {},
        )
        options = runner.EvalOptions(use_cache=False, n_boot=50, seed=5, fluency_prompts=2)
        out = tmp_path / f"res-{config}"
        runner.evaluate("fake-model", ds, config, out=out, update=upd, options=options, hooks=hooks)
        results.append(out)

    sub_dir = tmp_path / "leaderboard" / "submissions" / "fake-run"
    # "fake" is no registered method: an external one, with a URL (issue 16).
    options = SubmitOptions(model_id="fake/model", method_url="https://example.org/fake")
    sub = write_submission(results, sub_dir, options)
    assert sub.dataset.suite == "tinyzoo" and sub.bootstrap.seed == 5 and sub.seeds == [3]
    assert sub.method.name == "fake" and sub.method.params == {"lr": 1.0}
    # A board whose fixed bootstrap settings are the ones this evaluation used.
    policy = BoardPolicy(bootstrap_seed=5, n_boot=50)
    verified = verify_all([sub_dir], DatasetResolver([ds]), policy=policy)
    assert [s.id for s in verified] == ["fake-run"]
    efficacy = [c.metrics["efficacy@cloze"].value for c in sub.cells]
    assert all(v is not None for v in efficacy) and 0 < sum(efficacy) < len(efficacy)
