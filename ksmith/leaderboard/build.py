"""`ksmith leaderboard build`: verified submissions -> README.md, leaderboard.csv, index.html.

All files are rendered in memory first; nothing is written unless every submission verifies,
so a bad submission leaves the existing board byte-identical. `check=True` compares instead of
writing (for CI).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ksmith.leaderboard.aggregate import MetricInfo, registry_snapshot
from ksmith.leaderboard.checks import DEFAULT_POLICY, BoardPolicy
from ksmith.leaderboard.datasets import REGISTRY_FILE, DatasetResolver
from ksmith.leaderboard.html import render_html
from ksmith.leaderboard.render import render_csv, render_markdown
from ksmith.leaderboard.schema import Submission, json_schema_text
from ksmith.leaderboard.verify import submission_folders, verify_folders

log = logging.getLogger(__name__)

SCHEMA_FILE = "submission.schema.json"
BUILT_FILES = ("README.md", "leaderboard.csv", "index.html", SCHEMA_FILE)


@dataclass(frozen=True)
class BoardPaths:
    """Where a leaderboard lives (default: `leaderboard/` in the current folder)."""

    root: Path

    @property
    def submissions(self) -> Path:
        return self.root / "submissions"

    @property
    def registry(self) -> Path:
        return self.root / REGISTRY_FILE


def render_board(
    subs: list[Submission],
    registry: Mapping[str, MetricInfo] | None = None,
    suites: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, str]:
    """File name -> text of every built file. Pure: same submissions, same bytes. `suites`
    (dataset fingerprint -> its configs) decides which rows are complete, hence ranked."""
    registry = registry if registry is not None else registry_snapshot()
    subs = sorted(subs, key=lambda s: s.id)
    return {
        "README.md": render_markdown(subs, registry, suites=suites),
        "leaderboard.csv": render_csv(subs, registry),
        "index.html": render_html(subs, registry, suites),
        SCHEMA_FILE: json_schema_text(),
    }


def write_utf8(path: Path, text: str) -> None:
    """Atomic UTF-8 write (temp file in the same folder, then rename), whatever the locale."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these files are published
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def stale_files(root: Path, files: Mapping[str, str]) -> list[str]:
    """Built files whose content on disk differs from `files` (or that are missing)."""
    out = []
    for name, text in files.items():
        path = root / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            out.append(name)
    return out


def build_board(
    paths: BoardPaths,
    resolver: DatasetResolver,
    *,
    check: bool = False,
    registry: Mapping[str, MetricInfo] | None = None,
    policy: BoardPolicy = DEFAULT_POLICY,
) -> list[str]:
    """Verify every submission and (re)write the board; return the names of changed files
    (with `check`, the stale ones, and write nothing)."""
    folders = submission_folders(paths.submissions)
    verified = verify_folders(folders, resolver, paths.submissions, policy)
    subs = [v.submission for v in verified]
    suites = {v.submission.dataset.fingerprint: v.suite_configs for v in verified}
    files = render_board(subs, registry, suites)
    stale = stale_files(paths.root, files)
    if check:
        return stale
    for name in stale:
        write_utf8(paths.root / name, files[name])
        log.info("wrote %s", paths.root / name)
    return stale
