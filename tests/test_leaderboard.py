"""Leaderboard: submission format, submit, verification (tampering is caught), build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from leaderboard_fixtures import (
    CONFIGS,
    fingerprint,
    make_dataset,
    make_results,
    make_submission,
    make_update,
    tree_digest,
)

from ksmith.errors import KsmithError
from ksmith.leaderboard import (
    BoardPaths,
    DatasetResolver,
    Submission,
    SubmitOptions,
    build_board,
    json_schema_text,
    load_submission,
    render_board,
    verify_all,
    verify_submission,
    write_submission,
)
from ksmith.leaderboard.aggregate import COMPONENTS, harmonic_mean, oriented


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset and a board with two verified submissions, built once per module."""
    tmp = tmp_path_factory.mktemp("lb")
    ds = make_dataset(tmp / "dataset")
    board = tmp / "leaderboard"
    make_submission(tmp, ds, "ft-good", "ft", skill=0.85, board=board)
    make_submission(tmp, ds, "rome-weak", "rome", skill=0.55, configs=CONFIGS[:3], board=board)
    build_board(BoardPaths(board), DatasetResolver([ds]))
    return tmp, ds, board


@pytest.fixture
def board(world, tmp_path):
    """A private copy of the built board (tests may tamper with it)."""
    _, ds, src = world
    dst = tmp_path / "leaderboard"
    shutil.copytree(src, dst)
    return dst, ds


def _edit_yaml(folder: Path, change) -> None:
    path = folder / "submission.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _edit_predictions(folder: Path, change) -> None:
    path = folder / "predictions.parquet"
    table = pq.read_table(path)
    rows = change(table.to_pylist())
    pq.write_table(table.from_pylist(rows, schema=table.schema), path)


def _rejects(board_dir: Path, ds: Path, *needles: str) -> str:
    """verify and build both fail naming `needles`; the built files stay byte-identical."""
    built = {
        n: (board_dir / n).read_bytes() for n in ("README.md", "leaderboard.csv", "index.html")
    }
    subs = tree_digest(board_dir / "submissions")
    resolver = DatasetResolver([ds])
    folders = sorted(p for p in (board_dir / "submissions").iterdir() if p.is_dir())
    with pytest.raises(KsmithError) as err:
        verify_all(folders, resolver, board_dir=board_dir / "submissions")
    for needle in needles:
        assert needle in str(err.value), str(err.value)
    with pytest.raises(KsmithError):
        build_board(BoardPaths(board_dir), resolver)
    assert {n: (board_dir / n).read_bytes() for n in built} == built
    assert tree_digest(board_dir / "submissions") == subs  # verify never writes
    return str(err.value)


# --- format -------------------------------------------------------------------------------------


def test_submission_round_trips_and_schema_file_matches(world):
    _, _, board = world
    sub = load_submission(board / "submissions" / "ft-good")
    assert isinstance(sub, Submission) and sub.id == "ft-good"
    assert [c.config for c in sub.cells] == sorted(CONFIGS)
    assert sub.method.url == "https://example.org/paper" and sub.method.params["lr"] == 0.1
    assert sub.bootstrap.n_boot == 1000  # the board fixes it (issue 16)
    schema = json.loads((board / "submission.schema.json").read_text())
    assert (board / "submission.schema.json").read_text() == json_schema_text()
    assert set(schema["required"]) >= {"id", "dataset", "cells", "schema_version"}
    cols = pq.read_schema(board / "submissions" / "ft-good" / "predictions.parquet").names
    assert {
        "config",
        "probe_id",
        "group",
        "stage",
        "mode",
        "prediction",
        "score",
        "correct",
        "changed",
    } <= set(cols)


def test_cell_fields_must_match_config_name():
    cell = {
        "config": "zoo.edit.leaf.k4",
        "method": "ft",
        "kind": "edit",
        "level": "root",
        "scale": 4,
        "metrics": {"efficacy@mcq": {"value": 1.0, "ci": [1, 1], "n": 1, "mode": "mcq"}},
    }
    from pydantic import ValidationError

    from ksmith.leaderboard import Cell

    with pytest.raises(ValidationError, match="level"):
        Cell.model_validate(cell)


# --- submit -------------------------------------------------------------------------------------


def test_submit_refuses_foreign_folder_and_mixed_methods(world, tmp_path):
    tmp, ds, _ = world
    upd = make_update(tmp_path / "upd", "ft")
    a = make_results(tmp_path / "a", ds, CONFIGS[0], "ft", update=upd)
    b = make_results(tmp_path / "b", ds, CONFIGS[1], "memit", update=upd)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(KsmithError, match="not written by ksmith"):
        write_submission([a], foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(KsmithError, match="disagree on method"):
        write_submission([a, b], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(KsmithError, match="more than one results folder"):
        write_submission([a, a], tmp_path / "out")
    sub = write_submission([a], tmp_path / "out", SubmitOptions(dataset=ds))
    assert sub.dataset.suite == "tinyzoo" and sub.seeds == [0]
    write_submission([a], tmp_path / "out")  # its own earlier output may be replaced


def test_submit_keeps_shared_and_per_cell_hyper_parameters(world, tmp_path):
    _, ds, _ = world
    a = make_results(
        tmp_path / "a", ds, CONFIGS[0], "ft", update=make_update(tmp_path / "u1", "ft")
    )
    b = make_results(
        tmp_path / "b", ds, CONFIGS[1], "ft", update=make_update(tmp_path / "u2", "ft", lr=0.5)
    )
    sub = write_submission([b, a], tmp_path / "out")
    assert sub.method.params == {"seed": 0}
    assert [c.params for c in sub.cells] == [{"lr": 0.1}, {"lr": 0.5}]  # sorted by config


def test_submit_checks_dataset_fingerprint(world, tmp_path):
    tmp, ds, _ = world
    a = make_results(tmp_path / "a", ds, CONFIGS[0], "ft")
    other = make_dataset(tmp_path / "other", seed=1)
    with pytest.raises(KsmithError, match="fingerprint"):
        write_submission([a], tmp_path / "out", SubmitOptions(dataset=other))


# --- verify: accepted, and read-only ------------------------------------------------------------


def test_verify_accepts_honest_submissions_without_writing(board):
    board_dir, ds = board
    before = tree_digest(board_dir)
    folders = sorted(p for p in (board_dir / "submissions").iterdir() if p.is_dir())
    subs = verify_all(folders, DatasetResolver([ds]), board_dir=board_dir / "submissions")
    assert [s.id for s in subs] == ["ft-good", "rome-weak"]
    assert tree_digest(board_dir) == before


# --- verify: every kind of tampering is rejected, naming submission and field -------------------


def test_rejects_changed_aggregate(board):
    board_dir, ds = board

    def bump(d):
        m = d["cells"][0]["metrics"]["efficacy@mcq"]
        m["value"] = min(1.0, m["value"] + 0.25) if m["value"] < 1 else 0.5

    _edit_yaml(board_dir / "submissions" / "ft-good", bump)
    _rejects(board_dir, ds, "submission 'ft-good'", "cells[0].metrics.efficacy@mcq.value")


def test_rejects_changed_ci(board):
    board_dir, ds = board
    _edit_yaml(
        board_dir / "submissions" / "rome-weak",
        lambda d: d["cells"][1]["metrics"]["locality@cloze"].update(ci=[0.0, 1.0]),
    )
    _rejects(board_dir, ds, "submission 'rome-weak'", "cells[1].metrics.locality@cloze.ci")


def test_rejects_changed_prediction(board):
    board_dir, ds = board

    def flip(rows):
        for r in rows:
            if r["mode"] == "mcq" and r["stage"] == "after" and r["correct"]:
                r["prediction"] = next(
                    o for o in ("grass", "meat", "fish", "seeds") if o != r["prediction"]
                )
                break
        return rows

    _edit_predictions(board_dir / "submissions" / "ft-good", flip)
    _rejects(board_dir, ds, "submission 'ft-good'", "predictions.parquet", "field 'match_")


def test_rejects_flipped_correct_flag(board):
    board_dir, ds = board

    def flip(rows):
        for r in rows:
            if r["mode"] == "gen_exact" and r["stage"] == "after" and not r["correct"]:
                r["correct"] = True
                break
        else:
            raise AssertionError("fixture has no wrong gen_exact answer")
        return rows

    _edit_predictions(board_dir / "submissions" / "rome-weak", flip)
    _rejects(board_dir, ds, "submission 'rome-weak'", "field 'correct'")


def test_rejects_flipped_changed_flag(board):
    board_dir, ds = board

    def flip(rows):
        for r in rows:
            if r["stage"] == "after" and not r["changed"]:
                r["changed"] = True  # claims a collateral change that the predictions don't show
                break
        return rows

    _edit_predictions(board_dir / "submissions" / "ft-good", flip)
    _rejects(board_dir, ds, "submission 'ft-good'", "field 'changed'")


def test_rejects_cloze_match_without_the_answer(board):
    board_dir, ds = board

    def flip(rows):
        for r in rows:
            if r["mode"] == "cloze" and r["stage"] == "after" and not r["match_after"]:
                r.update(match_after=True, score=1.0)
                break
        return rows

    _edit_predictions(board_dir / "submissions" / "rome-weak", flip)
    _rejects(board_dir, ds, "submission 'rome-weak'", "field 'match_after'", "does not start")


def test_rejects_wrong_fingerprint(board):
    board_dir, ds = board
    _edit_yaml(
        board_dir / "submissions" / "ft-good",
        lambda d: d["dataset"].update(fingerprint=fingerprint(7)),
    )
    _rejects(
        board_dir, ds, "submission 'ft-good'", "dataset.fingerprint", "unknown dataset fingerprint"
    )


def test_rejects_missing_cell_predictions(board):
    board_dir, ds = board
    _edit_predictions(
        board_dir / "submissions" / "ft-good",
        lambda rows: [r for r in rows if r["config"] != CONFIGS[1]],
    )
    _rejects(board_dir, ds, "submission 'ft-good'", "cells[1].config", "no predictions")


def test_rejects_undeclared_cell(board):
    board_dir, ds = board
    _edit_yaml(board_dir / "submissions" / "ft-good", lambda d: d["cells"].pop(0))
    _rejects(board_dir, ds, "submission 'ft-good'", "which no cell declares")


def test_rejects_unknown_level(board):
    board_dir, ds = board
    folder = board_dir / "submissions" / "rome-weak"
    old = CONFIGS[0]
    new = old.replace(".leaf.", ".middle.")

    def rename(d):
        d["cells"][0].update(config=new, level="middle")

    _edit_yaml(folder, rename)
    _edit_predictions(
        folder,
        lambda rows: [{**r, "config": new if r["config"] == old else r["config"]} for r in rows],
    )
    _rejects(board_dir, ds, "submission 'rome-weak'", "cells[0].level", "'middle'")


def test_rejects_file_that_is_not_parquet(board):
    board_dir, ds = board
    (board_dir / "submissions" / "ft-good" / "predictions.parquet").write_text("probe_id,x\n")
    _rejects(board_dir, ds, "submission 'ft-good'", "predictions.parquet", "not a readable")


def test_rejects_missing_file(board):
    board_dir, ds = board
    (board_dir / "submissions" / "rome-weak" / "predictions.parquet").unlink()
    _rejects(board_dir, ds, "submission 'rome-weak'", "predictions.parquet", "missing file")


def test_rejects_malformed_field(board):
    board_dir, ds = board
    _edit_yaml(board_dir / "submissions" / "ft-good", lambda d: d["cells"][2].update(scale="ten"))
    _rejects(board_dir, ds, "submission 'ft-good'", "cells[2].scale")


def test_rejects_id_collision(board, tmp_path):
    board_dir, ds = board
    src = board_dir / "submissions" / "ft-good"
    shutil.copytree(src, board_dir / "submissions" / "ft-copy")
    _rejects(board_dir, ds, "submission 'ft-good'", "field 'id'")
    # A candidate outside the board may not take an id the board already has.
    shutil.rmtree(board_dir / "submissions" / "ft-copy")
    outside = tmp_path / "elsewhere" / "ft-good"
    shutil.copytree(src, outside)
    with pytest.raises(KsmithError, match="field 'id': id already used by"):
        verify_all([outside], DatasetResolver([ds]), board_dir=board_dir / "submissions")


def test_rejects_unknown_metric_name(board):
    board_dir, ds = board
    _edit_yaml(
        board_dir / "submissions" / "ft-good",
        lambda d: d["cells"][0]["metrics"].update(
            {"awesomeness@mcq": {"value": 1.0, "ci": [1.0, 1.0], "n": 1, "mode": "mcq"}}
        ),
    )
    _rejects(board_dir, ds, "submission 'ft-good'", "cells[0].metrics.awesomeness@mcq")


# --- datasets registry --------------------------------------------------------------------------


def test_registry_entry_is_regenerated_and_checked(board, tmp_path, monkeypatch):
    board_dir, ds = board
    spec = tmp_path / "suite.yaml"
    spec.write_text("name: tinyzoo\n")
    (board_dir / "datasets.yaml").write_text(f"{fingerprint()}: {spec}\n")
    calls = []

    def fake_main(argv):  # stands in for `ksmith generate SPEC --out DIR`
        calls.append(argv)
        make_dataset(argv[argv.index("--out") + 1])
        return 0

    monkeypatch.setattr("ksmith.cli.main", fake_main)
    resolver = DatasetResolver([], registry=board_dir / "datasets.yaml", cache_dir=tmp_path / "c")
    sub = verify_submission(board_dir / "submissions" / "ft-good", resolver)
    assert sub.id == "ft-good" and calls[0][:2] == ["generate", str(spec)]
    verify_submission(board_dir / "submissions" / "rome-weak", resolver)
    assert len(calls) == 1  # cached
    (board_dir / "datasets.yaml").write_text(f"{fingerprint(3)}: {spec}\n")
    bad = DatasetResolver([], registry=board_dir / "datasets.yaml", cache_dir=tmp_path / "d")
    with pytest.raises(KsmithError, match="regenerates fingerprint"):
        bad.resolve(fingerprint(3))


# --- build --------------------------------------------------------------------------------------


def test_build_is_deterministic_and_check_detects_staleness(board, world):
    board_dir, ds = board
    _, _, original = world
    for name in ("README.md", "leaderboard.csv", "index.html", "submission.schema.json"):
        assert (board_dir / name).read_bytes() == (original / name).read_bytes()
    resolver = DatasetResolver([ds])
    assert build_board(BoardPaths(board_dir), resolver, check=True) == []
    assert build_board(BoardPaths(board_dir), resolver) == []  # nothing to rewrite
    (board_dir / "leaderboard.csv").write_text("stale\n")
    assert build_board(BoardPaths(board_dir), resolver, check=True) == ["leaderboard.csv"]
    assert (board_dir / "leaderboard.csv").read_text() == "stale\n"  # --check writes nothing
    build_board(BoardPaths(board_dir), resolver)
    assert (board_dir / "leaderboard.csv").read_bytes() == (
        original / "leaderboard.csv"
    ).read_bytes()


def test_board_content(world):
    _, _, board = world
    readme = (board / "README.md").read_text()
    assert readme.index("| 1 | ft-good") < readme.index("| 2 | rome-weak")  # ranked
    assert "## Editing" in readme and "## Unlearning" in readme
    assert "level root" in readme and "scale k=4" in readme
    for name in COMPONENTS["edit"]:
        assert f"{name}@" in readme  # every table shows its components
    assert "harmonic mean" in readme
    rows = (board / "leaderboard.csv").read_text().splitlines()
    assert rows[0].startswith("submission,method,model,suite,dataset_fingerprint,config")
    assert len(rows) == 1 + len(CONFIGS) + 3
    html = (board / "index.html").read_text()
    assert "<svg" in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "<script src" not in html and "<link" not in html


def test_render_does_not_depend_on_input_order(world):
    _, _, board = world
    subs = [load_submission(p) for p in sorted((board / "submissions").iterdir()) if p.is_dir()]
    assert render_board(subs) == render_board(list(reversed(subs)))


def test_composite_is_a_harmonic_mean_of_oriented_components():
    assert harmonic_mean([0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert harmonic_mean([1.0, 0.0, 1.0]) == 0.0  # one failed property sinks the score
    assert harmonic_mean([None, 0.8]) == pytest.approx(0.8)  # n/a components are left out
    assert harmonic_mean([None]) is None
    # F1 is the harmonic mean of precision and recall.
    p, r = 0.9, 0.3
    assert harmonic_mean([p, r]) == pytest.approx(2 * p * r / (p + r))
    assert harmonic_mean([0.9, 0.3]) < (0.9 + 0.3) / 2
    assert oriented(0.2, "lower") == pytest.approx(0.8) and oriented(0.2, "higher") == 0.2


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_submit_verify_build(world, tmp_path, capsys):
    from ksmith.cli import main

    tmp, ds, _ = world
    upd = make_update(tmp_path / "upd", "ft")
    res = [
        make_results(tmp_path / f"r{i}", ds, c, "ft", update=upd) for i, c in enumerate(CONFIGS[:2])
    ]
    root = tmp_path / "lb"
    out = root / "submissions" / "cli-ft"
    assert (
        main(
            [
                "submit",
                *map(str, res),
                "--out",
                str(out),
                "--dataset",
                str(ds),
                "--method-url",
                "https://example.org/ft",
            ]
        )
        == 0
    )
    assert main(["leaderboard", "verify", "--root", str(root), "--datasets", str(ds)]) == 0
    assert (
        main(["leaderboard", "build", "--check", "--root", str(root), "--datasets", str(ds)]) == 1
    )
    assert main(["leaderboard", "build", "--root", str(root), "--datasets", str(ds)]) == 0
    assert (
        main(["leaderboard", "build", "--check", "--root", str(root), "--datasets", str(ds)]) == 0
    )
    _edit_yaml(out, lambda d: d["dataset"].update(fingerprint=fingerprint(9)))
    assert (
        main(["leaderboard", "verify", str(out), "--root", str(root), "--datasets", str(ds)]) == 2
    )
    assert "submission 'cli-ft'" in capsys.readouterr().err
