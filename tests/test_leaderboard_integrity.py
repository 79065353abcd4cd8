"""A leaderboard that cannot be gamed (issue 16, parts 2-4): coverage, checked claims, bounded
and clean input. Each test is one kind of tampering a submitter after a better rank would try."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from leaderboard_fixtures import CONFIGS, make_dataset, make_submission, tree_digest

from ksmith.cli import main
from ksmith.errors import KsmithError
from ksmith.leaderboard import BoardPaths, DatasetResolver, build_board, render_board, verify_all
from ksmith.leaderboard.aggregate import build_tables, registry_snapshot
from ksmith.leaderboard.checks import clean_text


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset and a board: one complete submission, one covering 1 of its 3 edit cells."""
    tmp = tmp_path_factory.mktemp("lbi")
    ds = make_dataset(tmp / "dataset")
    board = tmp / "leaderboard"
    make_submission(tmp, ds, "ft-good", "ft", skill=0.85, board=board)
    make_submission(tmp, ds, "ft-picked", "ft", skill=0.99, configs=CONFIGS[:1], board=board)
    build_board(BoardPaths(board), DatasetResolver([ds]))
    return tmp, ds, board


@pytest.fixture
def board(world, tmp_path):
    _, ds, src = world
    dst = tmp_path / "leaderboard"
    shutil.copytree(src, dst)
    return dst, ds


def _edit_yaml(folder: Path, change) -> None:
    path = folder / "submission.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def _edit_predictions(folder: Path, change) -> None:
    path = folder / "predictions.parquet"
    table = pq.read_table(path)
    pq.write_table(table.from_pylist(change(table.to_pylist()), schema=table.schema), path)


def _rejects(board_dir: Path, ds: Path, *needles: str) -> str:
    """verify and build fail naming `needles`; nothing on the board changes."""
    before = tree_digest(board_dir)
    folders = sorted(p for p in (board_dir / "submissions").iterdir() if p.is_dir())
    with pytest.raises(KsmithError) as err:
        verify_all(folders, DatasetResolver([ds]), board_dir=board_dir / "submissions")
    for needle in needles:
        assert needle in str(err.value), str(err.value)
    with pytest.raises(KsmithError):
        build_board(BoardPaths(board_dir), DatasetResolver([ds]))
    assert tree_digest(board_dir) == before
    return str(err.value)


# --- part 2: complete coverage ------------------------------------------------------------------


def test_cherry_picked_cells_are_listed_apart_unranked(world):
    _, _, board = world
    readme = (board / "README.md").read_text()
    ranked, _, partial = readme.partition("Partial submissions (not ranked)")
    assert "| 1 | ft-good |" in ranked and "ft-picked" not in ranked
    assert "| ft-picked | ft | models/world | 1/3 cells |" in partial
    html = (board / "index.html").read_text()
    assert "1/3 cells" in html


def test_partial_rows_are_in_no_ranked_table(world):
    from ksmith.leaderboard import load_submission

    _, ds, board = world
    subs = [load_submission(board / "submissions" / s) for s in ("ft-good", "ft-picked")]
    from ksmith.data import list_configs

    tables, curves = build_tables(
        subs, registry_snapshot(), {subs[0].dataset.fingerprint: list_configs(ds)}
    )
    for t in tables:
        assert "ft-picked" not in [r.submission for r in t.rows], t.title
    edit_all = next(t for t in tables if t.kind == "edit" and t.slice == "all")
    assert [(r.submission, r.cells, r.required) for r in edit_all.partial] == [("ft-picked", 1, 3)]
    assert all("ft-picked" not in c.series for c in curves)


# --- part 3: checked claims (without re-execution) ----------------------------------------------


def test_unregistered_method_without_url_is_rejected(board):
    board_dir, ds = board

    def drop_url(d):
        d["method"]["url"] = None

    _edit_yaml(board_dir / "submissions" / "ft-good", drop_url)
    _rejects(board_dir, ds, "field 'method.name'", "not a registered method", "method.url")


def test_relabelled_method_and_unknown_parameters_are_rejected(board):
    from ksmith.methods import get_method

    board_dir, ds = board
    rome = get_method("rome").Params().model_dump(mode="json")

    def relabel(d):  # a rome run claimed as memit
        d["method"].update(name="memit", url=None, params=rome)
        for c in d["cells"]:
            c["method"], c["params"] = "memit", {}

    _edit_yaml(board_dir / "submissions" / "ft-good", relabel)
    _rejects(board_dir, ds, "field 'method.params.", "parameters of method 'memit'")

    def unknown_key(d):
        d["method"].update(name="rome", params={**rome, "secret_boost": 3})
        for c in d["cells"]:
            c["method"] = "rome"

    _edit_yaml(board_dir / "submissions" / "ft-good", unknown_key)
    _rejects(board_dir, ds, "field 'method.params.secret_boost'", "parameters of method 'rome'")


# --- part 4: bounded, clean input ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "value"),
    [("cloze", math.nan), ("cloze", 1.5), ("cloze", -0.5), ("mcq", math.inf), ("mcq", 0.5)],
)
def test_per_item_scores_must_be_finite_and_in_range(board, mode, value):
    board_dir, ds = board

    def change(rows):
        row = next(r for r in rows if r["mode"] == mode and r["stage"] == "after")
        row["score"] = value
        return rows

    _edit_predictions(board_dir / "submissions" / "ft-good", change)
    _rejects(board_dir, ds, "submission 'ft-good'", "field 'score'")


@pytest.mark.parametrize(("seed", "n_boot"), [(0, 0), (-1, 1000), (0, 10**9), (7, 1000), (0, 1)])
def test_bootstrap_settings_are_the_boards(board, seed, n_boot):
    board_dir, ds = board

    def change(d):
        d["bootstrap"] = {"seed": seed, "n_boot": n_boot}

    _edit_yaml(board_dir / "submissions" / "ft-good", change)
    _rejects(board_dir, ds, "field 'bootstrap'", "fixed by the board")


def test_too_many_rows_are_refused_before_loading(board, monkeypatch):
    board_dir, ds = board
    path = board_dir / "submissions" / "ft-good" / "predictions.parquet"
    table = pq.read_table(path)
    big = pa.concat_tables([table] * 20)  # 20x what the dataset implies
    pq.write_table(big, path)
    import ksmith.leaderboard.verify as verify

    real = verify.read_predictions

    def guarded(p, *a, **k):
        assert Path(p) != path, "the oversized file's rows were loaded"
        return real(p, *a, **k)

    monkeypatch.setattr(verify, "read_predictions", guarded)
    _rejects(board_dir, ds, "predictions.parquet", "rows; the dataset implies at most")


def test_huge_values_are_refused_by_uncompressed_size(board, monkeypatch):
    board_dir, ds = board

    def change(rows):
        rows[0]["prediction"] = "x" * 50_000_000  # compresses to almost nothing
        return rows

    _edit_predictions(board_dir / "submissions" / "ft-good", change)
    _rejects(board_dir, ds, "predictions.parquet", "uncompressed")


def test_symlinked_predictions_are_refused(board, tmp_path):
    board_dir, ds = board
    folder = board_dir / "submissions" / "ft-good"
    outside = tmp_path / "elsewhere.parquet"
    shutil.move(folder / "predictions.parquet", outside)
    (folder / "predictions.parquet").symlink_to(outside)
    _rejects(board_dir, ds, "predictions.parquet", "symbolic link")


def test_symlinked_submission_folder_is_refused(board, tmp_path):
    board_dir, ds = board
    folder = board_dir / "submissions" / "ft-good"
    shutil.move(folder, tmp_path / "ft-good")
    folder.symlink_to(tmp_path / "ft-good")
    _rejects(board_dir, ds, "symbolic link")


@pytest.mark.parametrize("bad", ["\u202eevil", "a\x1b[31mred", "two\nlines", "\u2066x\u2069"])
def test_control_and_bidi_characters_in_names_are_rejected(board, bad):
    board_dir, ds = board

    def change(d):
        d["model"]["id"] = bad

    _edit_yaml(board_dir / "submissions" / "ft-good", change)
    _rejects(board_dir, ds, "field 'model.id'", "control or bidirectional character")


def test_names_are_escaped_in_markdown_and_html(world):
    from ksmith.leaderboard import load_submission

    _, _, board = world
    sub = load_submission(board / "submissions" / "ft-good")
    evil = "<img src=x onerror=alert(1)> | [click](javascript:x) `code`\u202e"
    sub = sub.model_copy(update={"model": sub.model.model_copy(update={"id": evil})})
    files = render_board([sub])
    assert "<img" not in files["README.md"] and "&lt;img src=x" in files["README.md"]
    assert "\\[click\\]" in files["README.md"] and "\\|" in files["README.md"]
    assert "<img" not in files["index.html"] and "&lt;img src=x" in files["index.html"]
    for text in files.values():
        assert "\u202e" not in text
    assert clean_text("a\u202eb\x00c\nd") == "abc d"


def test_duplicate_predictions_under_another_id_are_refused(board):
    board_dir, ds = board
    src = board_dir / "submissions" / "ft-good"
    dst = board_dir / "submissions" / "ft-good2"
    shutil.copytree(src, dst)
    _edit_yaml(dst, lambda d: d.update(id="ft-good2"))
    # Re-encoded (other compression, other row order): still the same predictions.
    table = pq.read_table(dst / "predictions.parquet")
    pq.write_table(
        table.take(list(range(table.num_rows))[::-1]),
        dst / "predictions.parquet",
        compression="gzip",
    )
    _rejects(board_dir, ds, "submission 'ft-good2'", "a duplicate", "'ft-good'")


@pytest.mark.parametrize(
    ("metric", "value", "needle"),
    [
        ("cost.wall_seconds@update", -1000.0, "below 0"),
        ("fluency@generation", math.nan, "not a finite number"),
        ("fluency@generation", math.inf, "not a finite number"),
    ],
)
def test_self_reported_numbers_must_be_in_range(board, metric, value, needle):
    board_dir, ds = board

    def change(d):
        d["cells"][0]["metrics"][metric]["value"] = value

    _edit_yaml(board_dir / "submissions" / "ft-good", change)
    _rejects(board_dir, ds, f"cells[0].metrics.{metric}.value", needle)


# --- part 5: a board root that is not a board ---------------------------------------------------


def test_verify_and_build_refuse_a_root_that_is_not_a_board(tmp_path, capsys):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "README.md").write_text("my notes\n")
    assert main(["leaderboard", "verify", "--root", str(tmp_path / "leaderbord")]) == 2
    assert "not a leaderboard folder" in capsys.readouterr().err
    assert main(["leaderboard", "build", "--root", str(notes)]) == 2
    assert "not a leaderboard folder" in capsys.readouterr().err
    assert (notes / "README.md").read_text() == "my notes\n"
    assert sorted(p.name for p in notes.iterdir()) == ["README.md"]


def test_submit_refuses_out_that_is_an_input(world, tmp_path):
    from leaderboard_fixtures import make_results

    from ksmith.leaderboard import write_submission

    _, ds, _ = world
    res = make_results(tmp_path / "res", ds, CONFIGS[0], "ft")
    before = tree_digest(res)
    with pytest.raises(KsmithError, match="input"):
        write_submission([res], res)
    assert tree_digest(res) == before
    # Another evaluation folder (as `ksmith evaluate` marks it) named as --out: refused too.
    other = make_results(tmp_path / "other", ds, CONFIGS[1], "ft")
    (other / ".ksmith-output").write_text('{"kind": "evaluation"}\n')
    kept = tree_digest(other)
    with pytest.raises(KsmithError, match="ksmith evaluation folder"):
        write_submission([res], other)
    assert tree_digest(other) == kept


def test_copy_of_a_board_submission_verified_alone_is_a_duplicate(board, tmp_path):
    """A pull request adds one folder and verifies only it: still compared with the board."""
    board_dir, ds = board
    new = tmp_path / "ft-mine"
    shutil.copytree(board_dir / "submissions" / "ft-good", new)
    _edit_yaml(new, lambda d: d.update(id="ft-mine"))
    with pytest.raises(KsmithError, match="those of submission 'ft-good': a duplicate"):
        verify_all([new], DatasetResolver([ds]), board_dir=board_dir / "submissions")


def test_yaml_aliases_are_refused(board):
    """Nested aliases (a "billion laughs") would expand when the parameters are checked."""
    board_dir, ds = board
    path = board_dir / "submissions" / "ft-good" / "submission.yaml"
    bomb = "\n".join(
        [f"x0: &x0 [{', '.join(['1'] * 9)}]"]
        + [f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 9)}]" for i in range(1, 9)]
    )
    params = "  params:\n    " + bomb.replace("\n", "\n    ") + "\n"
    text = path.read_text().replace("  params: {lr: 0.1, seed: 0}\n", params, 1)
    assert "*x7" in text
    path.write_text(text)
    _rejects(board_dir, ds, "submission 'ft-good'", "YAML aliases")


def test_the_no_update_baseline_claims_no_parameters(board):
    """A submission of method `none` (the pipeline's no-update baseline) verifies without a
    URL, but may not claim hyper-parameters."""
    board_dir, ds = board
    folder = board_dir / "submissions" / "ft-good"

    def baseline(d):
        d["method"].update(name="none", url=None, params={})
        for c in d["cells"]:
            c.update(method="none", params={})

    _edit_yaml(folder, baseline)
    verify_all([folder], DatasetResolver([ds]))

    def with_params(d):
        d["method"]["params"] = {"lr": 0.1}

    _edit_yaml(folder, with_params)
    with pytest.raises(KsmithError, match="the no-update baseline 'none' has no parameters"):
        verify_all([folder], DatasetResolver([ds]))
