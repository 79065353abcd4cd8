"""Finding the released dataset a submission was evaluated on, by fingerprint.

Two sources, in order: dataset folders given on the command line (`--datasets DIR`, their card's
fingerprint is read), then the known-datasets registry `leaderboard/datasets.yaml`, which maps a
fingerprint to the suite spec that generates it. A registry entry is regenerated once with
`ksmith generate SPEC --out CACHE/<fingerprint>` and checked to reproduce its fingerprint; later
runs reuse the cached folder. Relative spec paths are relative to the repository root (the folder
holding `leaderboard/`).

    # leaderboard/datasets.yaml
    3f9a...c2: specs/suites/knowledgesmith.yaml           # generated with defaults
    77b1...0e: {spec: specs/suites/tiny.yaml, args: [--size, tiny]}
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from ksmith.errors import KsmithError, SpecError
from ksmith.leaderboard.schema import FINGERPRINT_PATTERN
from ksmith.spec.yamlio import read_yaml

log = logging.getLogger(__name__)

REGISTRY_FILE = "datasets.yaml"


def default_cache_dir() -> Path:
    """`ksmith.io.cache_dir("datasets")`: $KSMITH_CACHE/datasets, else ~/.cache/ksmith/datasets."""
    from ksmith.io import cache_dir

    return cache_dir("datasets")


def read_registry(path: str | Path) -> dict[str, dict[str, Any]]:
    """fingerprint -> {spec: Path, args: [str]}; a missing file is an empty registry."""
    path = Path(path)
    if not path.is_file():
        return {}
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise SpecError("expected a mapping fingerprint -> suite spec path", file=path)
    root = path.resolve().parent.parent
    out = {}
    for fp, entry in raw.items():
        fp = str(fp)
        if not re.match(FINGERPRINT_PATTERN, fp):
            raise SpecError("not a sha256 hex fingerprint", file=path, field=fp)
        if isinstance(entry, str):
            entry = {"spec": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("spec"), str):
            raise SpecError(
                "expected a spec path or {spec: PATH, args: [...]}", file=path, field=fp
            )
        unknown = set(entry) - {"spec", "args"}
        if unknown:
            raise SpecError(f"unknown keys {sorted(unknown)}", file=path, field=fp)
        args = entry.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise SpecError("expected a list of strings", file=path, field=f"{fp}.args")
        spec = Path(entry["spec"])
        out[fp] = {"spec": spec if spec.is_absolute() else root / spec, "args": list(args)}
    return out


class FolderResolver:
    """fingerprint -> folder: folders given on the command line first, then registry entries,
    each regenerated once into the cache and checked to reproduce its fingerprint. Subclasses
    say how a folder is fingerprinted (`_fingerprint`, `_sentinel` marks a finished one), how an
    entry is regenerated (`_build`) and what a mismatch means (`_mismatch`)."""

    _sentinel = "README.md"
    _folders: dict[str, Path]
    _registry: dict[str, dict[str, Any]]
    _registry_path: Path | None
    _cache: Path

    def _fingerprint(self, folder: Path) -> str:
        raise NotImplementedError

    def _build(self, fingerprint: str, entry: dict[str, Any], out: Path) -> None:
        raise NotImplementedError

    def _mismatch(self, fingerprint: str, entry: dict[str, Any], got: str) -> SpecError:
        raise NotImplementedError

    def resolve(self, fingerprint: str | None) -> Path | None:
        """The folder with this fingerprint, or None if it is unknown here."""
        if fingerprint is None:
            return None
        if fingerprint in self._folders:
            return self._folders[fingerprint]
        if fingerprint in self._registry:
            folder = self._regenerate(fingerprint, self._registry[fingerprint])
            self._folders[fingerprint] = folder
            return folder
        return None

    def _regenerate(self, fingerprint: str, entry: dict[str, Any]) -> Path:
        out = self._cache / fingerprint
        if (out / self._sentinel).is_file():
            try:
                if self._fingerprint(out) == fingerprint:
                    return out
            except KsmithError:
                pass
        self._build(fingerprint, entry, out)
        got = self._fingerprint(out)
        if got != fingerprint:
            raise self._mismatch(fingerprint, entry, got)
        return out


class DatasetResolver(FolderResolver):
    """fingerprint -> dataset folder, from given folders or the registry (regenerating)."""

    def __init__(
        self,
        datasets: list[str | Path] = (),
        registry: str | Path | None = None,
        cache_dir: str | Path | None = None,
    ):
        from ksmith.data import read_card

        self._folders: dict[str, Path] = {}
        for d in datasets:
            fp = str(read_card(d)["fingerprint"])
            self._folders.setdefault(fp, Path(d))
        self._registry_path = Path(registry) if registry else None
        self._registry = read_registry(registry) if registry else {}
        self._cache = Path(cache_dir) if cache_dir else default_cache_dir()

    def known(self) -> list[str]:
        return sorted(set(self._folders) | set(self._registry))

    def _fingerprint(self, folder: Path) -> str:
        from ksmith.data import read_card

        return str(read_card(folder)["fingerprint"])

    def _build(self, fingerprint: str, entry: dict[str, Any], out: Path) -> None:
        if not Path(entry["spec"]).is_file():
            raise SpecError(
                f"suite spec {entry['spec']} does not exist",
                file=self._registry_path,
                field=fingerprint,
            )
        from ksmith.cli import main

        log.info("regenerating dataset %s from %s into %s", fingerprint[:12], entry["spec"], out)
        code = main(["generate", str(entry["spec"]), "--out", str(out), *entry["args"]])
        if code != 0:
            raise KsmithError(f"{self._registry_path}: `ksmith generate` failed for {fingerprint}")

    def _mismatch(self, fingerprint: str, entry: dict[str, Any], got: str) -> SpecError:
        return SpecError(
            f"suite spec {entry['spec']} regenerates fingerprint {got}, not the one listed",
            file=self._registry_path,
            field=fingerprint,
        )
