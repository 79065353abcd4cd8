"""CI guard for pull requests that add submissions: every committed submission verifies against
its released dataset, and the built board is up to date."""

from __future__ import annotations

from pathlib import Path

from ksmith.cli import main

BOARD = Path(__file__).resolve().parents[1] / "leaderboard"


def test_committed_submissions_verify(tmp_path):
    assert main(["leaderboard", "verify", "--root", str(BOARD), "--cache", str(tmp_path)]) == 0


def test_built_board_is_up_to_date(tmp_path):
    assert (
        main(["leaderboard", "build", "--check", "--root", str(BOARD), "--cache", str(tmp_path)])
        == 0
    )
