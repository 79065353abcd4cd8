"""`ksmith leaderboard build`: verified submissions -> README.md, leaderboard.csv, index.html.

All files are rendered in memory first; nothing is written unless every submission verifies,
so a bad submission leaves the existing board byte-identical. The files are then replaced
together (`write_together`): a build killed at any moment leaves the previous board, or one the
next build completes. `check=True` compares instead of writing (for CI).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ksmith.io import pid_alive
from ksmith.leaderboard.aggregate import MetricInfo, registry_snapshot
from ksmith.leaderboard.checks import DEFAULT_POLICY, BoardPolicy
from ksmith.leaderboard.datasets import REGISTRY_FILE, DatasetResolver
from ksmith.leaderboard.examples import example_rows
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
    examples: Mapping[str, list[dict[str, Any]]] | None = None,
    checks: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """File name -> text of every built file. Pure: same submissions, same bytes. `suites`
    (dataset fingerprint -> its configs) decides which rows are complete, hence ranked;
    `examples` (submission id -> `example_rows`) fills the page's drill-down; `checks`
    (submission id -> its matching audit record, or None) says which were re-executed."""
    registry = registry if registry is not None else registry_snapshot()
    subs = sorted(subs, key=lambda s: s.id)
    return {
        "README.md": render_markdown(subs, registry, suites=suites, checks=checks),
        "leaderboard.csv": render_csv(subs, registry, checks),
        "index.html": render_html(subs, registry, suites, examples, checks),
        SCHEMA_FILE: json_schema_text(),
    }


# The built files change together: each new file is written whole beside the board, then a
# journal naming them is written, then they are renamed into place. A build killed before the
# journal leaves the previous board (its temporary files are removed by the next build); killed
# after it, the next build completes the renames first. Names carry the builder's pid.
_BUILD_TMP = re.compile(r"^\.(?P<name>.+)\.build-(?P<pid>[0-9]+)$")
_JOURNAL = re.compile(r"^\.build-journal-(?P<pid>[0-9]+)\.json(?P<tmp>\.tmp)?$")


def finish_interrupted_build(root: Path) -> None:
    """Complete or undo what a killed `build` left in `root` (see the journal above)."""
    if not root.is_dir():
        return
    for entry in sorted(root.iterdir()):
        m = _JOURNAL.match(entry.name)
        if not m or pid_alive(int(m["pid"])):
            continue
        if not m["tmp"]:
            for tmp_name, final in json.loads(entry.read_text(encoding="utf-8")).items():
                if (root / tmp_name).is_file():
                    os.replace(root / tmp_name, root / final)
                    log.info("completed an interrupted build: %s", final)
        entry.unlink()
    for entry in sorted(root.iterdir()):
        m = _BUILD_TMP.match(entry.name)
        if m and not pid_alive(int(m["pid"])):
            entry.unlink()


def write_together(root: Path, files: Mapping[str, str]) -> None:
    """Replace the built files so that a kill at any moment leaves the previous set or, once
    the next build has run `finish_interrupted_build`, the complete new set."""
    pid = os.getpid()
    staged = {}
    for name, text in files.items():
        tmp = root / f".{name}.build-{pid}"
        tmp.write_bytes(text.encode("utf-8"))
        os.chmod(tmp, 0o644)
        staged[tmp.name] = name
    journal = root / f".build-journal-{pid}.json"
    pending = journal.with_name(journal.name + ".tmp")
    pending.write_text(json.dumps(staged, sort_keys=True), encoding="utf-8")
    os.replace(pending, journal)
    for tmp_name, name in staged.items():
        os.replace(root / tmp_name, root / name)
        log.info("wrote %s", root / name)
    journal.unlink()


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
    if not check:
        finish_interrupted_build(paths.root)
    folders = submission_folders(paths.submissions)
    verified = verify_folders(folders, resolver, paths.submissions, policy)
    subs = [v.submission for v in verified]
    suites = {v.submission.dataset.fingerprint: v.suite_configs for v in verified}
    cache: dict[Any, Any] = {}
    examples = {
        v.submission.id: example_rows(
            v.folder, resolver.resolve(v.submission.dataset.fingerprint), cache
        )
        for v in verified
    }
    from ksmith.leaderboard.records import matching_record

    # Which submissions the board's audit re-executed: records written by `leaderboard audit`
    # for these exact files (ksmith.leaderboard.audit); the others are marked on every table.
    checks = {v.submission.id: matching_record(paths.root, v) for v in verified}
    files = render_board(subs, registry, suites, examples, checks)
    stale = stale_files(paths.root, files)
    if check:
        return stale
    write_together(paths.root, {name: files[name] for name in stale})
    return stale
