"""Leaderboard, unlearning against the retain model (issue 12): a submission carries both models'
per-item rows, `verify` recomputes forget quality, retain agreement and the rest with the
evaluator's own `cell_metrics`, and the board shows them for unlearning rows only."""

from __future__ import annotations

import csv
import io
import json
import shutil
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from leaderboard_fixtures import CONFIGS, make_dataset, make_results, make_update

from ksmith.errors import KsmithError
from ksmith.leaderboard import (
    DatasetResolver,
    SubmitOptions,
    render_board,
    verify_submission,
    write_submission,
)
from ksmith.leaderboard import unlearning as U

UNLEARN = next(c for c in CONFIGS if ".unlearn." in c)
METHOD_URL = "https://example.org/unlearn"


def _probes(ds: Path) -> list[dict]:
    from ksmith.data import load_probes

    return sorted(load_probes(ds, UNLEARN), key=lambda p: (int(p["group"]), p["id"]))


def _logprob(*parts) -> float:
    """A deterministic token log-probability in [-4, 0) from `parts`."""
    return -4.0 * (zlib.crc32("/".join(map(str, parts)).encode()) / 2**32) - 1e-3


def _items(probes: list[dict], who: str, forget_lp: float) -> list[dict]:
    """items.parquet rows of one simulated model: the forgotten facts' correct answers get
    mean log-prob around `forget_lp`, the perturbed ones and the Q- facts pseudo-random."""
    from ksmith.evaluate.unlearn_items import item_key
    from ksmith.evaluate.unlearning import fact_items

    rows = []
    for side, qset in (("forget", "Q+"), ("retain", "Q-")):
        for f in fact_items(probes, qset):
            for role, pairs in (("correct", f.correct_requests()),
                                ("perturbed", f.perturbed_requests())):  # fmt: skip
                for prompt, answer in pairs:
                    base = forget_lp if (side, role) == ("forget", "correct") else -2.0
                    lps = [
                        min(-1e-3, base + 0.5 * _logprob(who, prompt, answer, t)) for t in range(2)
                    ]
                    rows.append({"group": f.group, "side": side, "item": item_key(f), "role": role,
                                 "prompt": prompt, "answer": answer, "logprobs": lps,
                                 "hits": [x > -1.0 for x in lps]})  # fmt: skip
    assert any(r["side"] == "forget" for r in rows), "the fixture's config has forget facts"
    return rows


def _unlearn_results(tmp: Path, ds: Path, method: str, retain_dir: Path) -> Path:
    """The unlearn cell evaluated against the retain model, as the evaluator writes it:
    items.parquet and the `cell_metrics` numbers in metrics.json."""
    from ksmith.evaluate.retain_metrics import cell_metrics
    from ksmith.evaluate.unlearn_items import read_items, write_items
    from ksmith.leaderboard.predictions import read_predictions

    probes = _probes(ds)
    ref = retain_dir / f"{UNLEARN}.s0"
    if not ref.exists():
        make_results(ref, ds, UNLEARN, "retain-model", skill=0.9)
        write_items(ref, _items(probes, "retain", -2.0))
        removed = [[p["subject"], p["relation"], p["object"]] for p in probes
                   if p["qset"] == "Q-"][:1]  # fmt: skip
        (ref / "retain.json").write_text(json.dumps(
            {"model_fingerprint": "r" * 8, "forget_fingerprint": "f" * 8, "removed": removed}
        ))  # fmt: skip
    folder = make_results(tmp / f"res-{method}-{UNLEARN}", ds, UNLEARN, method, skill=0.8,
                          update=make_update(tmp / f"upd-{method}", method))  # fmt: skip
    write_items(folder, _items(probes, method, -0.5))
    doc = json.loads((ref / "retain.json").read_text())
    got = cell_metrics(
        read_items(folder), read_items(ref),
        read_predictions(folder / "predictions.parquet", with_config=False),
        read_predictions(ref / "predictions.parquet", with_config=False),
        probes, {tuple(t) for t in doc["removed"]},
    )  # fmt: skip
    assert "forget_quality@teacher_forced" in got and "retain_agreement@cloze" in got
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["metrics"].update(got)
    (folder / "metrics.json").write_text(json.dumps(metrics, sort_keys=True))
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset, the retain stage's folder and one submission (every config; the unlearn one
    against the retain model)."""
    tmp = tmp_path_factory.mktemp("lbu")
    ds = make_dataset(tmp / "dataset")
    retain = tmp / "retain-results"
    results = [
        make_results(tmp / f"res-{c}", ds, c, "toy-unlearn", update=make_update(tmp / "u", "x"))
        for c in CONFIGS
        if c != UNLEARN
    ]
    results.append(_unlearn_results(tmp, ds, "toy-unlearn", retain))
    sub = tmp / "board" / "toy-unlearn"
    write_submission(results, sub, SubmitOptions(method_url=METHOD_URL, retain=retain))
    return tmp, ds, retain, results, sub


@pytest.fixture
def sub(world, tmp_path):
    """A private copy of the submission (tests tamper with it)."""
    _, ds, *_, src = world
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst, ds


def _edit_cell_metric(folder: Path, name: str, change) -> None:
    path = folder / "submission.yaml"
    data = yaml.safe_load(path.read_text())
    cell = next(c for c in data["cells"] if c["config"] == UNLEARN)
    change(cell["metrics"], name)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_submission_carries_both_models_rows(world):
    *_, sub = world
    for name in U.FILES:
        assert (sub / name).is_file(), name
    table = pq.read_table(sub / U.ITEMS_FILE)
    assert set(table.column("model").to_pylist()) == {"unlearned", "retain"}
    assert set(table.column("config").to_pylist()) == {UNLEARN}
    doc = json.loads((sub / U.RETAIN_FILE).read_text())
    assert list(doc["configs"]) == [UNLEARN] and len(doc["configs"][UNLEARN]["removed"]) == 1


def test_consistent_rows_verify(world):
    _, ds, *_, sub = world
    verified = verify_submission(sub, DatasetResolver([ds]))
    cell = next(c for c in verified.cells if c.config == UNLEARN)
    assert cell.metrics["forget_quality@teacher_forced"].value is not None


def test_tampered_forget_quality_is_rejected(sub):
    folder, ds = sub

    def bump(metrics, name):
        v = metrics[name]["value"]
        metrics[name]["value"] = v + 0.1 if v < 0.9 else v - 0.1

    _edit_cell_metric(folder, "forget_quality@teacher_forced", bump)
    with pytest.raises(
        KsmithError, match=r"submission\.yaml.*forget_quality@teacher_forced\.value"
    ):
        verify_submission(folder, DatasetResolver([ds]))


def test_tampered_item_scores_are_rejected(sub):
    """Making the unlearned model's forget answers look like the retain model's changes the
    recomputed numbers, so the declared ones no longer match."""
    folder, ds = sub
    path = folder / U.ITEMS_FILE
    table = pq.read_table(path)
    rows = table.to_pylist()
    for r in rows:
        if r["model"] == "unlearned" and r["side"] == "forget" and r["role"] == "correct":
            r["logprobs"] = [x - 3.0 for x in r["logprobs"]]
    pq.write_table(table.from_pylist(rows, schema=table.schema), path)
    with pytest.raises(KsmithError, match=r"cells\[\d+\]\.metrics\.[a-z_.]+@teacher_forced"):
        verify_submission(folder, DatasetResolver([ds]))


def test_tampered_retain_prediction_is_rejected(sub):
    """The retain model's predictions are checked against the dataset like the submission's."""
    folder, ds = sub
    path = folder / U.RETAIN_PREDICTIONS_FILE
    table = pq.read_table(path)
    rows = table.to_pylist()
    row = next(r for r in rows if r["mode"] == "gen_exact" and r["stage"] == "after")
    row["score"] = 1.0 - row["score"]
    pq.write_table(table.from_pylist(rows, schema=table.schema), path)
    with pytest.raises(KsmithError, match=r"retain_predictions\.parquet.*score"):
        verify_submission(folder, DatasetResolver([ds]))


@pytest.mark.parametrize("gone", U.FILES)
def test_missing_rows_are_rejected(sub, gone):
    folder, ds = sub
    (folder / gone).unlink()
    with pytest.raises(KsmithError, match=f"{gone}.*missing file"):
        verify_submission(folder, DatasetResolver([ds]))


def test_claims_without_any_rows_are_rejected(sub):
    folder, ds = sub
    for name in U.FILES:
        (folder / name).unlink()
    with pytest.raises(KsmithError, match=r"metrics\.[a-z_.]+@\w+.*no rows to recompute"):
        verify_submission(folder, DatasetResolver([ds]))


def test_a_removed_fact_the_config_does_not_ask_is_rejected(sub):
    folder, ds = sub
    doc = json.loads((folder / U.RETAIN_FILE).read_text())
    doc["configs"][UNLEARN]["removed"] = [["nobody", "eats", "nothing"]]
    (folder / U.RETAIN_FILE).write_text(json.dumps(doc))
    with pytest.raises(KsmithError, match=r"retain\.json.*removed.*not asked"):
        verify_submission(folder, DatasetResolver([ds]))


def test_items_bounded_by_the_dataset(sub, monkeypatch):
    folder, ds = sub
    monkeypatch.setattr(U, "ITEM_ROWS_PER_PROBE", 0)
    with pytest.raises(KsmithError, match=r"items\.parquet.*rows; the dataset implies at most"):
        verify_submission(folder, DatasetResolver([ds]))


def _old_results(cell, tmp_path):
    """A copy of an unlearn cell as evaluated before issue 12: no metrics against the retain
    model (its items.parquet is left for the caller to drop or keep)."""
    old = tmp_path / "old-results"
    shutil.copytree(cell, old)
    metrics = json.loads((old / "metrics.json").read_text())
    metrics["metrics"] = {
        k: v for k, v in metrics["metrics"].items()
        if k.partition("@")[0].partition(".")[0] not in U.RETAIN_METRICS
    }  # fmt: skip
    (old / "metrics.json").write_text(json.dumps(metrics))
    return old


def test_old_submission_without_rows_still_verifies(world, tmp_path):
    """A submission whose unlearn cell has no metrics against the retain model (evaluated
    before issue 12) has none of the files and verifies as before; --retain changes nothing."""
    tmp, ds, retain, results, _ = world
    old = _old_results(results[-1], tmp_path)
    (old / "items.parquet").unlink()
    out = tmp_path / "board" / "old-unlearn"
    write_submission([*results[:-1], old], out, SubmitOptions(method_url=METHOD_URL, retain=retain))
    assert not any((out / name).exists() for name in U.FILES)
    verify_submission(out, DatasetResolver([ds]))


def test_submit_needs_retain_for_claimed_metrics(world, tmp_path):
    tmp, ds, retain, results, _ = world
    with pytest.raises(KsmithError, match="pass --retain"):
        write_submission(results, tmp_path / "x", SubmitOptions(method_url=METHOD_URL))


def test_board_shows_retain_columns_for_unlearning_rows_only(world, tmp_path):
    tmp, ds, retain, results, sub = world
    board = tmp_path / "board"
    (board / "submissions").mkdir(parents=True)
    shutil.copytree(sub, board / "submissions" / sub.name)
    # an older submission of the same method without the rows: blank columns
    old = _old_results(results[-1], tmp_path)
    write_submission([*results[:-1], old], board / "submissions" / "old-unlearn",
                     SubmitOptions(method_url=METHOD_URL))  # fmt: skip
    resolver = DatasetResolver([ds])
    files = render_board(
        [verify_submission(f, resolver) for f in (board / "submissions").iterdir()]
    )
    rows = list(csv.DictReader(io.StringIO(files["leaderboard.csv"])))
    fq = {(r["submission"], r["config"]): r["forget_quality"] for r in rows}
    ra = {(r["submission"], r["config"]): r["retain_agreement"] for r in rows}
    cell = yaml.safe_load((sub / "submission.yaml").read_text())
    want = next(c for c in cell["cells"] if c["config"] == UNLEARN)["metrics"]
    assert float(fq[(sub.name, UNLEARN)]) == want["forget_quality@teacher_forced"]["value"]
    assert float(ra[(sub.name, UNLEARN)]) == want["retain_agreement@cloze"]["value"]
    for key in fq:
        if key != (sub.name, UNLEARN):  # edit cells, and the older submission's unlearn cell
            assert fq[key] == "" and ra[key] == "", key
    md = files["README.md"]
    unlearn_part = md[md.index("## Unlearning") :]
    edit_part = md[md.index("## Editing") : md.index("## Unlearning")]
    header = next(line for line in unlearn_part.splitlines() if line.startswith("| rank"))
    assert "forget_quality@teacher_forced ↑" in header and "retain_agreement@cloze ↑" in header
    assert "forget_quality" not in edit_part and "retain_agreement" not in edit_part
    heads = [c.strip() for c in header.strip("|").split("|")]
    table = unlearn_part[unlearn_part.index(header) :].split("\n\n")[0].splitlines()[2:]
    shown = {}
    for line in table:
        cols = [c.strip() for c in line.strip("|").split("|")]
        shown[cols[1]] = cols[heads.index("forget_quality@teacher_forced ↑")]
    assert shown == {
        "old-unlearn": "–",
        sub.name: f"{want['forget_quality@teacher_forced']['value']:.3f}",
    }
    assert "forget_quality@teacher_forced" in files["index.html"]


def test_tiny_forget_quality_is_shown_in_scientific_notation():
    """TOFU's forget quality is a p-value, often far below 0.001: it must not show as 0.000."""
    from ksmith.leaderboard.aggregate import Row, Table
    from ksmith.leaderboard.render import retain_cells

    row = Row("a", "m", "x", 1, None, {}, {}, None, retain={"forget_quality": 2.3e-6})
    assert retain_cells(Table("t", "unlearn", "s", "f", [row]), row) == ["2.3e-06", "–"]
    assert retain_cells(Table("t", "edit", "s", "f", [row]), row) == []
