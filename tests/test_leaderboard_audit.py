"""The re-execution audit (issue 16, part 1) on a real, tiny pipeline: the generator's world, a
world model pretrained in the test, a real update and the real evaluator. A consistent lie
(predictions rewritten and every flag and aggregate recomputed to match) passes `verify`, and
the audit catches it; so does a relabelled method claim; honest submissions pass, by re-running
the method or by applying the artifacts they carry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from ksmith.cli import main
from ksmith.data import read_card
from ksmith.data.generate import generate_dataset
from ksmith.errors import KsmithError
from ksmith.evaluate.runner import EvalOptions, evaluate
from ksmith.leaderboard import DatasetResolver, SubmitOptions, verify_folders, write_submission
from ksmith.leaderboard.audit import (
    AuditOptions,
    NotReexecutable,
    audit_sample,
    audit_size,
    audit_submission,
    recall_prompts,
)
from ksmith.leaderboard.models import ModelResolver, one_thread
from ksmith.leaderboard.records import matching_record
from ksmith.methods import get_method
from ksmith.methods.commands import UpdateRun, update_from_dataset
from ksmith.methods.params import resolve_params
from ksmith.models import model_fingerprint
from ksmith.world import load_world_spec
from ksmith.world.pretrain import pretrain

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EDIT = "biology.edit.leaf.k10"
UNLEARN = "biology.unlearn.leaf.k10"
# A small world (40 species) and a short budget: the audit needs a deterministic model, not a
# knowledgeable one.
WORLD = ("max_steps=150", "curriculum_steps=0", "eval_every=150", "eval_sample=50",
         "allow_below_threshold=true")  # fmt: skip
SIZE = {"branching": {"root": 4, "intermediate": 2, "leaf": 5}, "pools": {"region": 12, "continent": 4}}  # fmt: skip


def _suite(tmp: Path) -> Path:
    graph = yaml.safe_load((REPO / "specs" / "graphs" / "biology.yaml").read_text())
    graph["sizes"]["small"] = SIZE
    (tmp / "biology.yaml").write_text(yaml.safe_dump(graph, sort_keys=False))
    inter = yaml.safe_load((REPO / "specs" / "interventions" / "default.yaml").read_text())
    inter.update(kinds=["edit", "unlearn"], levels=["leaf"], scales=[10], groups=1)
    (tmp / "inter.yaml").write_text(yaml.safe_dump(inter, sort_keys=False))
    suite = {"kind": "suite", "version": 1, "name": "audit", "seed": 0,
             "graphs": [{"path": str(tmp / "biology.yaml"), "size": "small"}],
             "interventions": str(tmp / "inter.yaml")}  # fmt: skip
    (tmp / "suite.yaml").write_text(yaml.safe_dump(suite))
    return tmp / "suite.yaml"


def _submit(tmp: Path, ds: Path, model: Path, method: str, config: str, sid: str, **kw) -> Path:
    with one_thread():  # as the pipeline runs it (--threads 1)
        update_from_dataset(
            UpdateRun(
                model=str(model),
                dataset=str(ds),
                config=config,
                method=method,
                out=str(tmp / f"u-{sid}"),
                device="cpu",
            )  # fmt: skip
        )
        evaluate(str(model), ds, config, out=tmp / f"r-{sid}", update=tmp / f"u-{sid}",
                 options=EvalOptions(device="cpu", use_cache=False))  # fmt: skip
    out = tmp / "board" / "submissions" / sid
    write_submission([tmp / f"r-{sid}"], out, SubmitOptions(dataset=ds, **kw))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit")
    ds = tmp / "dataset"
    generate_dataset(_suite(tmp), ds, progress=False, workers=1)
    spec = tmp / "world.yaml"
    spec.write_text((REPO / "specs" / "world" / "default.yaml").read_text())
    model = tmp / "model"
    with one_thread():
        pretrain(ds, model, load_world_spec(spec, WORLD), device="cpu", progress=False)
    with pytest.MonkeyPatch.context() as mp:
        # Second-moment statistics (ROME) are cached here, not in ~/.cache.
        mp.setenv("KSMITH_CACHE", str(tmp / "cache"))
        subs = {
            "rome": _submit(tmp, ds, model, "rome", EDIT, "w-rome"),
            "ice": _submit(tmp, ds, model, "ice", EDIT, "w-ice", with_updates=True),
            "ga": _submit(tmp, ds, model, "ga", UNLEARN, "w-ga", with_updates=True),
        }
        yield tmp, ds, model, spec, subs


def _verified(folder: Path, ds: Path):
    return verify_folders([folder], DatasetResolver([ds]))[0]


def _copy(folder: Path, tmp: Path) -> Path:
    dst = tmp / "board" / "submissions" / folder.name
    shutil.copytree(folder, dst)
    return dst


def _lie(folder: Path, ds: Path, modes: tuple[str, ...] = ("gen_exact", "gen_contains")) -> int:
    """Rewrite wrong after-stage predictions of `modes` to the expected answer (generation and
    mcq: the answer; cloze: the answer with token accuracy 1.0) and recompute every flag and
    aggregate, as a submitter who recomputes would. Returns how many rows changed."""
    from ksmith.data import load_probes
    from ksmith.evaluate.metrics import compute_metrics
    from ksmith.evaluate.scoring import contains_match, correct_after, exact_match

    path = folder / "predictions.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    data = yaml.safe_load((folder / "submission.yaml").read_text())
    config = data["cells"][0]["config"]
    probes = {p["id"]: p for p in load_probes(ds, config)}
    before = {(r["probe_id"], r["mode"]): r["prediction"] for r in rows if r["stage"] == "before"}
    changed = 0
    for r in rows:
        p = probes[r["probe_id"]]
        if r["stage"] != "after" or r["mode"] not in modes or p["expect_after"] != "match":
            continue
        if r["match_after"] or (r["mode"] == "mcq" and p["answer_after"] not in p["options"]):
            continue
        r["prediction"] = p["answer_after"]
        if r["mode"] == "mcq":
            r["match_before"] = r["prediction"] == p["answer_before"]
            r["match_after"] = True
        elif r["mode"] == "cloze":
            r["match_before"] = exact_match(r["prediction"], p["answer_before"])
            r["match_after"], r["score"] = True, 1.0
        else:
            match = exact_match if r["mode"] == "gen_exact" else contains_match
            r["match_before"] = match(r["prediction"], p["answer_before"])
            r["match_after"] = match(r["prediction"], p["answer_after"])
            r["score"] = float(r["match_after"])
        r["correct"] = correct_after(r["match_after"], p["expect_after"])
        r["changed"] = r["prediction"] != before[(r["probe_id"], r["mode"])]
        changed += 1
    pq.write_table(table.from_pylist(rows, schema=table.schema), path)
    fresh = compute_metrics(list(probes.values()), [{k: v for k, v in r.items() if k != "config"} for r in rows],
                            kind=data["cells"][0]["kind"], seed=0, n_boot=1000)  # fmt: skip
    for name, m in fresh.items():
        data["cells"][0]["metrics"][name] = {"value": m["value"], "ci": list(m["ci"]),
                                             "n": m["n"], "mode": m["mode"]}  # fmt: skip
    (folder / "submission.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return changed


class _BatchSensitive:
    """A backend whose greedy recall depends on the batch it is generated in (as float
    rounding can make a real one's, at a near-tie): it writes the batch's size."""

    max_length = None

    def generate(self, prompts, max_new_tokens, stop=("\n",)):
        return [f"batch of {len(prompts)}" for _ in prompts]

    def generate_words(self, prompts, max_new_tokens, words, stop=("\n",)):
        return self.generate(prompts, max_new_tokens, stop)


def test_audit_recalls_are_generated_in_the_evaluations_batches():
    """An audited reasoned probe's recall is the one the evaluation generated: among the
    reasoned prompts scored together with it, not among the audit sample only."""
    from ksmith.evaluate.scoring import scored_prompts

    probes = [
        {"id": f"p{i}", "prompt": f"Is {i} true?", "request_id": "r", "cue": "Answer:" if i % 3 else ""}
        for i in range(12)
    ]  # fmt: skip
    evaluated = dict(
        zip([p["id"] for p in probes], scored_prompts(_BatchSensitive(), probes), strict=True)
    )
    wanted = ["p1", "p3", "p5"]
    got = recall_prompts(_BatchSensitive(), probes, {}, wanted)
    assert {w: got[w] for w in wanted} == {w: evaluated[w] for w in wanted}
    assert evaluated["p1"] == "Is 1 true? batch of 8 Answer:" and evaluated["p3"] == "Is 3 true?"
    # the sample alone would have been another batch, so another recall
    alone = scored_prompts(_BatchSensitive(), [p for p in probes if p["id"] in wanted])
    assert alone[0] != evaluated["p1"]
    with pytest.raises(KsmithError, match="not among"):
        recall_prompts(_BatchSensitive(), probes[:2], {}, ["p5"])


def test_a_disagreeing_row_is_rescored_in_its_evaluation_chunk():
    """A row is re-scored exactly as the evaluation scored it: judged among the probes of its
    evaluation chunk (`CHUNK_SIZE` of the probes scored together), which fixes the batches."""
    from ksmith.evaluate.scoring import judge_probes
    from ksmith.leaderboard.audit import CHUNK_SIZE, in_evaluation_chunk

    probes = [
        {"id": f"p{i:04d}", "group": 0, "prompt": f"What is {i}?", "request_id": "r", "cue": "",
         "format": "qa", "answer_before": "x", "answer_after": "y"}
        for i in range(CHUNK_SIZE + 40)
    ]  # fmt: skip
    evaluated = {
        (j["probe_id"], j["mode"]): j for j in judge_probes(_BatchSensitive(), probes, chunk_size=CHUNK_SIZE)
    }  # fmt: skip
    backend = _BatchSensitive()
    for pid in ("p0003", f"p{CHUNK_SIZE + 5:04d}"):  # in the first chunk, in the second
        row = {"probe_id": pid, "mode": "gen_exact"}
        got = in_evaluation_chunk(backend, probes, {}, {}, row)
        assert got == evaluated[(pid, "gen_exact")]
    assert evaluated[("p0003", "gen_exact")]["prediction"] == f"batch of {CHUNK_SIZE}"
    assert evaluated[(f"p{CHUNK_SIZE + 5:04d}", "gen_exact")]["prediction"] == "batch of 40"
    alone = judge_probes(backend, probes[3:4], chunk_size=CHUNK_SIZE)
    assert alone[0]["prediction"] == "batch of 1"  # what a sample-only re-score would give


def test_audit_size_catches_one_percent_with_probability_0999():
    n = audit_size(0.01, 0.999)
    assert n == 688
    assert 0.99**n <= 0.001 < 0.99 ** (n - 1)
    rows = [{"config": "c", "probe_id": f"p{i}", "stage": "after", "mode": "mcq"} for i in range(2000)]  # fmt: skip
    a, b = audit_sample(rows, AuditOptions(), 7), audit_sample(rows[::-1], AuditOptions(), 7)
    assert len(a) == n and a == b  # the file's row order does not matter, the seed does
    assert audit_sample(rows, AuditOptions(), 8) != a
    assert len(audit_sample(rows, AuditOptions(full=True), 7)) == 2000


def test_honest_submissions_pass_by_rerun_and_by_artifacts(world):
    tmp, ds, model, _, subs = world
    models = ModelResolver([model])
    rec = audit_submission(_verified(subs["rome"], ds), ds, models, AuditOptions(seed=1))
    assert rec.source == "re-run" and rec.rows > rec.audited == audit_size() == 688
    # The no-update baseline: its after stage is the base model again.
    with one_thread():
        evaluate(str(model), ds, EDIT, out=tmp / "r-none", options=EvalOptions(use_cache=False))
    none = write_submission([tmp / "r-none"], tmp / "board" / "submissions" / "w-none",
                            SubmitOptions(dataset=ds, method_url="https://example.org/none"))  # fmt: skip
    rec = audit_submission(_verified(tmp / "board" / "submissions" / "w-none", ds), ds, models,
                           AuditOptions(seed=1))  # fmt: skip
    assert none.method.name == "none" and rec.source == "no-update" and 0 < rec.audited <= rec.rows
    for name in ("ice", "ga"):
        assert (
            subs[name] / "updates" / (EDIT if name == "ice" else UNLEARN) / "update.json"
        ).is_file()
        rec = audit_submission(_verified(subs[name], ds), ds, models, AuditOptions(seed=1))
        assert rec.source == "artifacts" and rec.audited > 0


@pytest.mark.parametrize(
    ("name", "modes"),
    [("rome", ("gen_exact", "gen_contains")), ("rome", ("mcq",)), ("rome", ("cloze",)),
     ("ga", ("gen_exact", "gen_contains")), ("ice", ("mcq",))],
)  # fmt: skip
def test_consistent_lie_passes_verify_and_fails_the_audit(world, tmp_path, name, modes):
    """re-run (rome) and artifacts (ga, ice); generation, mcq and cloze lies alike."""
    tmp, ds, model, _, subs = world
    folder = _copy(subs[name], tmp_path)
    if _lie(folder, ds, modes) == 0:
        pytest.skip(f"{name}: no wrong {modes} prediction to rewrite")
    verified = _verified(folder, ds)  # every number recomputes: verify cannot tell
    with pytest.raises(KsmithError, match=r"re-execution disagrees: re-executed "):
        audit_submission(verified, ds, ModelResolver([model]), AuditOptions(full=True))


def test_relabelled_method_fails_the_audit(world, tmp_path):
    tmp, ds, model, _, subs = world
    folder = _copy(subs["rome"], tmp_path)
    data = yaml.safe_load((folder / "submission.yaml").read_text())
    # A rome run claimed as memit with memit's own valid parameters: verify accepts the claim.
    memit = resolve_params(get_method("memit"), model_type="llama", num_layers=2)
    data["method"]["name"] = "memit"
    data["method"]["params"] = {**memit.model_dump(mode="json"), "mom2_n_tokens": 20000}
    for c in data["cells"]:
        c["method"] = "memit"
    (folder / "submission.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(KsmithError, match="re-execution disagrees|re-running the claimed"):
        audit_submission(_verified(folder, ds), ds, ModelResolver([model]), AuditOptions(full=True))


def test_artifacts_must_be_the_claimed_run(world, tmp_path):
    tmp, ds, model, _, subs = world
    folder = _copy(subs["ga"], tmp_path)
    path = folder / "updates" / UNLEARN / "update.json"
    info = json.loads(path.read_text())
    info["params"]["lr"] = 0.5  # an update made with other hyper-parameters than claimed
    path.write_text(json.dumps(info))
    with pytest.raises(KsmithError, match=r"update.json\): field 'params'"):
        audit_submission(_verified(folder, ds), ds, ModelResolver([model]), AuditOptions(seed=0))
    folder = _copy(subs["ice"], tmp_path)
    link = folder / "updates" / EDIT / "g0" / "prefix.json"
    link.unlink()
    link.symlink_to(tmp_path)
    with pytest.raises(KsmithError, match="link"):
        audit_submission(_verified(folder, ds), ds, ModelResolver([model]), AuditOptions(seed=0))


def test_unknown_model_is_not_reexecutable(world):
    tmp, ds, model, _, subs = world
    with pytest.raises(NotReexecutable, match="not a world model this board can regenerate"):
        audit_submission(_verified(subs["rome"], ds), ds, ModelResolver([]), AuditOptions())


def test_registry_regenerates_the_world_model_and_the_board_records_the_audit(
    world, tmp_path, capsys
):
    tmp, ds, model, spec, subs = world
    board = tmp_path / "board"
    folder = _copy(subs["rome"], tmp_path)
    fp = model_fingerprint(model)
    overrides = dict(s.split("=", 1) for s in WORLD)
    overrides = {k: yaml.safe_load(v) for k, v in overrides.items()}
    dataset_fp = read_card(ds)["fingerprint"]
    entry = {"spec": str(spec), "dataset": dataset_fp, "overrides": overrides}
    (board / "models.yaml").write_text(yaml.safe_dump({fp: entry}))
    cache = tmp_path / "models"
    args = ["leaderboard", "audit", "--root", str(board), "--datasets", str(ds),
            "--model-cache", str(cache), "--audit-seed", "3"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ok w-rome: re-executed (re-run)" in out and "audit seed 3" in out
    assert model_fingerprint(cache / fp) == fp  # regenerated bit for bit
    record = matching_record(board, _verified(folder, ds))
    assert record is not None and record.seed == 3
    build = ["leaderboard", "build", "--root", str(board), "--datasets", str(ds)]
    assert main(build) == 0
    readme = (board / "README.md").read_text()
    assert "| re-executed |" in readme and "re-executed (re-run): 688 of" in readme
    assert "predictions †" not in readme
    # A changed submission no longer matches its record: the board marks it; a liar's audit
    # writes nothing.
    _lie(folder, ds)
    assert matching_record(board, _verified(folder, ds)) is None
    assert main(build) == 0
    readme = (board / "README.md").read_text()
    assert "| predictions † |" in readme and "| re-executed |" not in readme
    assert "predictions checked, not re-executed †" in readme
    before = (board / "audits" / "w-rome.json").read_text()
    assert main(args) == 2
    assert "re-execution disagrees" in capsys.readouterr().err
    assert (board / "audits" / "w-rome.json").read_text() == before


def test_registry_entry_that_does_not_regenerate_names_the_versions(world, tmp_path):
    from ksmith.errors import SpecError

    tmp, ds, model, spec, subs = world
    (tmp_path / "lb").mkdir()
    registry = tmp_path / "lb" / "models.yaml"
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in WORLD)}
    entry = {"spec": str(spec), "dataset": read_card(ds)["fingerprint"], "overrides": overrides,
             "versions": {"torch": "1.0", "transformers": "4.0"}}  # fmt: skip
    wrong = "0" * 64
    registry.write_text(yaml.safe_dump({wrong: entry}))
    resolver = ModelResolver([], registry=registry, cache_dir=tmp_path / "c",
                             datasets=DatasetResolver([ds]))  # fmt: skip
    with pytest.raises(SpecError, match=r"models.yaml.*listed: torch 1.0, transformers 4.0; here"):
        resolver.resolve(wrong)


def test_a_cloze_match_is_backed_across_punctuation():
    """The world model can run a sentence on without a space ("slime" "." "Prompt" decodes as
    "slime.Prompt"); a claimed match is backed when punctuation separates the answer."""
    from ksmith.leaderboard.rescore import _cloze_backed

    assert _cloze_backed("slime.Prompt", "slime") and _cloze_backed("fur.", "fur")
    assert _cloze_backed("St. Louis is", "St. Louis")
    assert not _cloze_backed("furry", "fur") and not _cloze_backed("the fur", "fur coat")
    assert _cloze_backed("greenPrompt", "green") and _cloze_backed("Kelanida", "Kelanida")
    assert not _cloze_backed("greenish", "green")


def test_a_trained_editor_is_found_or_retrained_by_its_fingerprint(world, tmp_path, monkeypatch):
    """SERAC's submission records its editor by content (weights fingerprint, training
    settings); the audit does not depend on the claimed editor_path resolving where it runs: it
    takes a folder given with `editors` that has the fingerprint, or trains the editor again and
    checks it. A claimed fingerprint the settings do not give fails; a submission that records
    no editor cannot be re-run."""
    from ksmith.leaderboard.rerun import trained_editor
    from ksmith.methods.trained.commands import train_editor
    from ksmith.methods.trained.editor import editor_fingerprint

    tmp, ds, model, _, _ = world
    work = tmp_path / "pipeline"
    work.mkdir()
    monkeypatch.chdir(work)  # the update and submit run here, with a path relative to it
    settings = ("steps=30", "n_train=40", "n_heldout=8", "batch_edits=8")
    with one_thread():
        train_editor("serac", ds, model, "editors/serac", overrides=settings, progress=False)
        update_from_dataset(UpdateRun(model=str(model), dataset=str(ds), config=EDIT,
                                      method="serac", out="u", device="cpu",
                                      overrides=("editor_path=editors/serac",)))  # fmt: skip
        evaluate(str(model), ds, EDIT, out=work / "r", update=work / "u",
                 options=EvalOptions(device="cpu", use_cache=False))  # fmt: skip
    folder = tmp_path / "board" / "submissions" / "w-serac"
    sub = write_submission([work / "r"], folder, SubmitOptions(dataset=ds))
    fp = editor_fingerprint(work / "editors" / "serac")
    assert sub.method.params["editor_path"] == "editors/serac"
    assert sub.method.editor is not None and sub.method.editor.fingerprint == fp
    assert sub.method.editor.training["steps"] == 30

    elsewhere = tmp_path / "auditor"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the claimed editor_path resolves to nothing here
    models, verified = ModelResolver([model]), _verified(folder, ds)
    found = trained_editor(verified.submission, folder, model, ds, [work / "editors"],
                            tmp_path / "e1")  # fmt: skip
    assert found == work / "editors" / "serac"
    rec = audit_submission(verified, ds, models, AuditOptions(seed=1))  # retrains it
    assert rec.source == "re-run" and rec.audited > 0
    with one_thread():
        again = trained_editor(verified.submission, folder, model, ds, [], tmp_path / "e2")
    assert again == tmp_path / "e2" and editor_fingerprint(again) == fp

    data = yaml.safe_load((folder / "submission.yaml").read_text())
    data["method"]["editor"]["training"]["steps"] = 31  # not the settings that made it
    (folder / "submission.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(KsmithError, match=r"method.editor.fingerprint.*trained again"):
        audit_submission(_verified(folder, ds), ds, models, AuditOptions(seed=1))
    del data["method"]["editor"]
    (folder / "submission.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(NotReexecutable, match="records none by content"):
        audit_submission(_verified(folder, ds), ds, models, AuditOptions(seed=1))
