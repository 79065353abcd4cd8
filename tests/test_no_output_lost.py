"""No output is ever lost: a command replacing a folder, killed at any step, leaves the complete
previous folder or the complete new one; the next run cleans what the killed one left; `--out`
naming an input or a ksmith folder of another kind is refused (issue 16, part 5)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ksmith.errors import KsmithError
from ksmith.io import MARKER, atomic_output_dir, marker_kind, recover_output_dir

# Run in a subprocess: write `out` (files "a", "b" holding VERSION) through atomic_output_dir,
# with every file-system step counted and the process SIGKILLed just before step KILL_AT.
KILL_SCRIPT = textwrap.dedent(
    """
    import os, shutil, signal, sys
    from pathlib import Path
    import ksmith.io as kio

    out, version, kill_at, exchange = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if exchange == "no":
        kio._RENAMEAT2 = None  # the two-rename fallback of systems without renameat2
    step = [0]

    def counted(fn):
        def wrapper(*a, **k):
            if step[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            step[0] += 1
            return fn(*a, **k)
        return wrapper

    Path.rename = counted(Path.rename)
    Path.write_text = counted(Path.write_text)
    shutil.rmtree = counted(shutil.rmtree)
    kio.exchange = counted(kio.exchange)
    with kio.atomic_output_dir(out, kind="test") as tmp:
        (tmp / "a").write_text(version)
        (tmp / "b").write_text(version)
    print("steps", step[0])
    """
)


def _run(out: Path, version: str, kill_at: int, exchange: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(out), version, str(kill_at), exchange],
        capture_output=True,
        text=True,
        check=False,
    )


def _version(out: Path) -> str:
    """The folder's version; fails unless it is complete (both files, same version, marker)."""
    a, b = (out / "a").read_text(), (out / "b").read_text()
    assert a == b and marker_kind(out) == "test", os.listdir(out)
    return a


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


@pytest.mark.parametrize("exchange", ["yes", "no"])
def test_killed_at_every_step_leaves_old_or_new_and_next_run_cleans(tmp_path, exchange):
    out = tmp_path / "out"
    done = _run(out, "v0", -1, exchange)
    assert done.returncode == 0, done.stderr
    steps = int(done.stdout.split()[-1])
    assert steps >= 4  # two files, the marker, the swap (and more)
    for kill_at in range(steps):
        proc = _run(out, f"v{kill_at + 1}", kill_at, exchange)
        assert proc.returncode == -signal.SIGKILL, (kill_at, proc.stderr)
        if exchange == "yes":  # one atomic exchange: never a moment without a complete folder
            assert _version(out) in (f"v{kill_at}", f"v{kill_at + 1}"), kill_at
        recover_output_dir(out)  # what the next run does first
        assert _version(out) in (f"v{kill_at}", f"v{kill_at + 1}"), kill_at
        assert _run(out, f"v{kill_at + 1}", -1, exchange).returncode == 0
        assert _version(out) == f"v{kill_at + 1}"
        assert _leftovers(out) == [], kill_at


def test_killed_between_the_two_renames_is_restored_by_the_next_run(tmp_path):
    out = tmp_path / "data"
    with atomic_output_dir(out, kind="dataset") as tmp:
        (tmp / "f").write_text("old")
    # What a run killed between `out -> .old` and `.tmp -> out` left (pid 2**22+1: not alive).
    dead = 2**22 + 1
    out.rename(tmp_path / f".data.old-{dead}")
    (tmp_path / f".data.tmp-{dead}-x").mkdir()
    (tmp_path / f".data.tmp-{dead}-x" / "f").write_text("half")
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out, kind="dataset") as tmp:
            raise RuntimeError("fails before the swap")
    assert (out / "f").read_text() == "old"
    assert _leftovers(out) == []


def test_leftovers_of_live_runs_are_not_touched(tmp_path):
    out = tmp_path / "data"
    mine = tmp_path / f".data.tmp-{os.getpid()}-busy"
    mine.mkdir()
    with atomic_output_dir(out, kind="dataset") as tmp:
        (tmp / "f").write_text("x")
    assert mine.is_dir()


@pytest.mark.parametrize(
    ("existing", "writing"),
    [
        ("dataset", "update"),
        ("update", "evaluation"),
        ("evaluation", "submission"),
        ("world-model", "dataset"),
    ],
)
def test_out_of_another_kind_is_refused(tmp_path, existing, writing):
    out = tmp_path / "x"
    with atomic_output_dir(out, kind=existing) as tmp:
        (tmp / "keep").write_text("mine")
    with pytest.raises(KsmithError, match=f"ksmith {existing} folder"):
        with atomic_output_dir(out, kind=writing):
            pass
    assert (out / "keep").read_text() == "mine"
    assert json.loads((out / MARKER).read_text()) == {"kind": existing}


def test_same_kind_and_interchangeable_kinds_are_replaced(tmp_path):
    out = tmp_path / "model"
    for kind in ("world-model", "world-model", "model-pointer", "world-model"):
        with atomic_output_dir(out, kind=kind) as tmp:
            (tmp / "k").write_text(kind)
        assert (out / "k").read_text() == kind


def test_out_that_is_an_input_is_refused(tmp_path):
    src = tmp_path / "results"
    src.mkdir()
    (src / "r").write_text("keep")
    for out in (src, src / "inner", tmp_path):
        with pytest.raises(KsmithError, match="input"):
            with atomic_output_dir(out, kind="submission", inputs=[src]):
                pass
    assert (src / "r").read_text() == "keep"


def test_symlinked_out_is_refused(tmp_path):
    real = tmp_path / "real"
    with atomic_output_dir(real, kind="dataset") as tmp:
        (tmp / "f").write_text("x")
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(KsmithError, match="symbolic link"):
        with atomic_output_dir(tmp_path / "link", kind="dataset"):
            pass


# --- real commands ------------------------------------------------------------------------------

# `ksmith ARGV...` in a subprocess, SIGKILLed before its file-system step KILL_AT (-1: never),
# or sent SIGINT (Ctrl-C) at the step instead when MODE is "int".
COMMAND_SCRIPT = textwrap.dedent(
    """
    import json, os, shutil, signal, sys, time
    from pathlib import Path
    import ksmith.io as kio
    from ksmith.cli import main

    argv, kill_at, mode = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    # a terminal's process: Ctrl-C raises KeyboardInterrupt, whatever disposition this process
    # inherited (a test run started in the background has SIGINT ignored, and so its children)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if mode == "rename":
        kio._RENAMEAT2 = None
    step = [0]

    def counted(fn):
        def wrapper(*a, **k):
            step[0] += 1
            if step[0] - 1 == kill_at:
                if mode == "int":
                    # to this (the main) thread: a process-wide kill may land on another thread
                    # (numpy's, pyarrow's), and a single 5 s sleep would then not be interrupted
                    signal.raise_signal(signal.SIGINT)
                    for _ in range(50):  # KeyboardInterrupt is raised at a loop's check
                        time.sleep(0.1)
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*a, **k)
        return wrapper

    Path.rename = counted(Path.rename)
    Path.write_text = counted(Path.write_text)
    shutil.rmtree = counted(shutil.rmtree)
    kio.exchange = counted(kio.exchange)
    code = main(argv)
    print("steps", step[0])
    sys.exit(code)
    """
)


def _command(argv: list[str], kill_at: int = -1, mode: str = "kill"):
    return subprocess.run(
        [sys.executable, "-c", COMMAND_SCRIPT, json.dumps(argv), str(kill_at), mode],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Two evaluation folders (simulated, tests/leaderboard_fixtures.py) of one method."""
    from leaderboard_fixtures import CONFIGS, make_dataset, make_results

    tmp = tmp_path_factory.mktemp("nol")
    ds = make_dataset(tmp / "dataset")
    return [make_results(tmp / f"res{i}", ds, CONFIGS[i], "ft") for i in range(2)]


def _cells(sub_dir: Path) -> int:
    """Cells of a complete submission folder (its YAML and predictions agree)."""
    from ksmith.leaderboard import load_submission
    from ksmith.leaderboard.predictions import read_predictions

    sub = load_submission(sub_dir)
    configs = {r["config"] for r in read_predictions(sub_dir / "predictions.parquet")}
    assert configs == {c.config for c in sub.cells} and marker_kind(sub_dir) == "submission"
    return len(sub.cells)


@pytest.mark.parametrize("mode", ["kill", pytest.param("rename", marks=pytest.mark.slow)])
def test_submit_killed_at_every_step(tmp_path, results, mode):
    out = tmp_path / "board" / "submissions" / "ft-run"
    url = ["--method-url", "https://example.org/ft"]
    old = ["submit", str(results[0]), "--out", str(out), *url]
    new = ["submit", str(results[0]), str(results[1]), "--out", str(out), *url]
    assert _command(old).returncode == 0
    done = _command(new)
    assert done.returncode == 0, done.stderr
    steps = int(done.stdout.split()[-1])
    for kill_at in range(steps):  # each run replaces 2 cells by 1 or 1 by 2, alternately
        proc = _command(old if kill_at % 2 else new, kill_at, mode)
        assert proc.returncode == -signal.SIGKILL, (kill_at, proc.stderr[-2000:])
        if mode == "kill":
            assert _cells(out) in (1, 2), kill_at
        recover_output_dir(out)
        assert _cells(out) in (1, 2), kill_at
    assert _command(new).returncode == 0 and _cells(out) == 2
    assert _leftovers(out) == []


def test_ctrl_c_ends_with_one_line_and_keeps_the_previous_output(tmp_path, results):
    out = tmp_path / "ft-run"
    url = ["--method-url", "https://example.org/ft"]
    assert _command(["submit", str(results[0]), "--out", str(out), *url]).returncode == 0
    new = ["submit", str(results[0]), str(results[1]), "--out", str(out), *url]
    proc = _command(new, 0, "int")  # Ctrl-C at the first step (writing submission.yaml)
    assert proc.returncode == 130, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("INFO")]
    assert lines == ["ksmith: interrupted; outputs left as they were or complete"], proc.stderr
    assert _cells(out) == 1
    assert _leftovers(out) == []


@pytest.mark.slow
def test_generate_killed_between_the_renames_keeps_the_dataset(tmp_path):
    from ksmith.data import read_card

    spec = Path(__file__).resolve().parents[1] / "specs" / "suites" / "default.yaml"
    out = tmp_path / "dataset"
    argv = ["generate", str(spec), "--out", str(out)]
    first = _command(argv, -1, "rename")
    assert first.returncode == 0, first.stderr[-2000:]
    fp = read_card(out)["fingerprint"]
    steps = int(first.stdout.split()[-1])
    # The last steps are the swap: kill before each of them (between the renames included).
    for kill_at in range(max(0, steps - 3), steps):
        proc = _command(argv, kill_at, "rename")
        assert proc.returncode == -signal.SIGKILL
        rerun = _command(argv, -1, "rename")  # the next run restores, then replaces
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert read_card(out)["fingerprint"] == fp and _leftovers(out) == []


def test_update_and_generate_refuse_an_out_of_another_kind(tmp_path, results):
    """`submit --out` an evaluation folder, `generate --out` a submission: refused, kept."""
    from leaderboard_fixtures import tree_digest

    evaluation = tmp_path / "evaluation"
    shutil.copytree(results[0], evaluation)
    (evaluation / MARKER).write_text('{"kind": "evaluation"}\n')
    before = tree_digest(evaluation)
    proc = _command(["submit", str(results[1]), "--out", str(evaluation)])
    assert proc.returncode == 2 and "is a ksmith evaluation folder" in proc.stderr
    assert tree_digest(evaluation) == before
    spec = Path(__file__).resolve().parents[1] / "specs" / "suites" / "default.yaml"
    proc = _command(["generate", str(spec), "--out", str(evaluation)])
    assert proc.returncode == 2 and "is a ksmith evaluation folder" in proc.stderr
    assert tree_digest(evaluation) == before


BUILD_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from ksmith.leaderboard import BoardPaths, DatasetResolver, build_board

    root, ds, kill_at = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    step = [0]

    def counted(fn):
        def wrapper(*a, **k):
            step[0] += 1
            if step[0] - 1 == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*a, **k)
        return wrapper

    os.replace = counted(os.replace)
    Path.write_bytes = counted(Path.write_bytes)
    Path.write_text = counted(Path.write_text)
    Path.unlink = counted(Path.unlink)
    build_board(BoardPaths(root), DatasetResolver([ds]))
    print("steps", step[0])
    """
)

BUILT = ("README.md", "leaderboard.csv", "index.html")


@pytest.mark.slow
def test_leaderboard_build_killed_at_every_step_leaves_one_whole_board(tmp_path):
    from leaderboard_fixtures import CONFIGS, make_dataset, make_submission

    from ksmith.leaderboard import BoardPaths, DatasetResolver, build_board
    from ksmith.leaderboard.build import finish_interrupted_build

    ds = make_dataset(tmp_path / "dataset")
    board = tmp_path / "board"
    make_submission(tmp_path, ds, "ft-a", "ft", configs=CONFIGS[:3], board=board)
    build_board(BoardPaths(board), DatasetResolver([ds]))
    old = {n: (board / n).read_bytes() for n in BUILT}
    make_submission(tmp_path, ds, "ft-b", "ft", skill=0.6, configs=CONFIGS[:3], board=board)

    def run(kill_at: int) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-c", BUILD_SCRIPT, str(board), str(ds), str(kill_at)]
        return subprocess.run(argv, capture_output=True, text=True, check=False)

    def restore_old() -> None:
        for n, data in old.items():
            (board / n).write_bytes(data)

    done = run(-1)
    assert done.returncode == 0, done.stderr[-2000:]
    steps = int(done.stdout.split()[-1])
    new = {n: (board / n).read_bytes() for n in BUILT}
    assert new != old
    for kill_at in range(steps):
        restore_old()
        assert run(kill_at).returncode == -signal.SIGKILL
        finish_interrupted_build(board)  # what the next build does first
        now = {n: (board / n).read_bytes() for n in BUILT}
        assert now in (old, new), kill_at
        assert sorted(p.name for p in board.iterdir() if p.name.startswith(".")) == [], kill_at
