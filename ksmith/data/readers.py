"""Readers for a generated dataset folder (docs/contracts.md section 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ksmith.data.card import corpus_path, probes_path, read_card, requests_path
from ksmith.data.parquet import read_rows
from ksmith.errors import KsmithError


def list_configs(directory: str | Path) -> list[str]:
    """The probe configs of the dataset (no `corpus`, no `.requests`), sorted by name."""
    return list(read_card(directory)["counts"])


def list_profile_configs(directory: str | Path) -> list[str]:
    """The capability-profile configs of the dataset (`<domain>.profile.<level>`)."""
    return list(read_card(directory).get("profile") or {})


def _check_config(directory: str | Path, config: str) -> None:
    known = list_configs(directory) + list_profile_configs(directory)
    if config not in known:
        raise KsmithError(
            f"{directory}: no config '{config}'; known: {', '.join(known) or '(none)'}"
        )


def load_probes(directory: str | Path, config: str) -> list[dict[str, Any]]:
    """Probe rows (contract section 3) of `config`."""
    _check_config(directory, config)
    return read_rows(Path(directory) / probes_path(config))


def load_requests(directory: str | Path, config: str) -> list[dict[str, Any]]:
    """Request rows (contract section 2) of `config`."""
    _check_config(directory, config)
    return read_rows(Path(directory) / requests_path(config))


def load_corpus(directory: str | Path) -> list[str]:
    """The training corpus lines, in order."""
    return [row["text"] for row in read_rows(Path(directory) / corpus_path())]
