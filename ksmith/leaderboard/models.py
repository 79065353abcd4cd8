"""Finding the world model a submission was made on, by fingerprint, to re-execute it.

Mirrors `datasets.py`. Two sources, in order: model folders given on the command line
(`--models DIR`, fingerprinted with `ksmith.models.model_fingerprint`), then the board's registry
`leaderboard/models.yaml`, which maps a world model's fingerprint to what regenerates it: the
world-model spec (with `key=value` overrides, as `ksmith pretrain --set`) and the fingerprint of
the dataset it is trained on. A registry entry is regenerated once with `ksmith.world.pretrain`
on one CPU thread (the pipeline's setting; the world model is deterministic, issue "The world
model as a faithful instrument") into CACHE/<fingerprint>, checked to reproduce its fingerprint,
and reused later. Relative spec paths are relative to the repository root.

    # leaderboard/models.yaml
    0f80...3e: {spec: specs/world/default.yaml, dataset: ad1d...45,
                versions: {torch: 2.13.0+cpu, transformers: 5.24.0}}
    9c21...07: {spec: specs/world/default.yaml, dataset: ad1d...45, overrides: {max_steps: 8000}}

A model listed nowhere (a Hub model, a private checkpoint) cannot be re-executed here: its
submissions are shown as "predictions checked, not re-executed".
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from ksmith.errors import KsmithError, SpecError
from ksmith.leaderboard.datasets import DatasetResolver, FolderResolver
from ksmith.leaderboard.schema import FINGERPRINT_PATTERN

log = logging.getLogger(__name__)

REGISTRY_FILE = "models.yaml"


def default_cache_dir() -> Path:
    """`ksmith.io.cache_dir("models")`: $KSMITH_CACHE/models, else ~/.cache/ksmith/models."""
    from ksmith.io import cache_dir

    return cache_dir("models")


def read_model_registry(path: str | Path) -> dict[str, dict[str, Any]]:
    """fingerprint -> {spec: Path, dataset: str, overrides: {key: value}}; a missing file is an
    empty registry."""
    from ksmith.spec.yamlio import read_yaml

    path = Path(path)
    if not path.is_file():
        return {}
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise SpecError("expected a mapping fingerprint -> {spec, dataset}", file=path)
    root = path.resolve().parent.parent
    out = {}
    for fp, entry in raw.items():
        fp = str(fp)
        if not re.match(FINGERPRINT_PATTERN, fp):
            raise SpecError("not a sha256 hex fingerprint", file=path, field=fp)
        if not isinstance(entry, dict):
            raise SpecError("expected {spec: PATH, dataset: FINGERPRINT}", file=path, field=fp)
        unknown = set(entry) - {"spec", "dataset", "overrides", "versions"}
        if unknown:
            raise SpecError(f"unknown keys {sorted(unknown)}", file=path, field=fp)
        if not isinstance(entry.get("spec"), str):
            raise SpecError("expected a world-model spec path", file=path, field=f"{fp}.spec")
        dataset = str(entry.get("dataset", ""))
        if not re.match(FINGERPRINT_PATTERN, dataset):
            raise SpecError("expected a dataset fingerprint", file=path, field=f"{fp}.dataset")
        overrides = entry.get("overrides") or {}
        if not isinstance(overrides, dict):
            raise SpecError("expected a mapping key -> value", file=path, field=f"{fp}.overrides")
        spec = Path(entry["spec"])
        versions = entry.get("versions") or {}
        if not isinstance(versions, dict):
            raise SpecError(
                "expected a mapping library -> version", file=path, field=f"{fp}.versions"
            )
        out[fp] = {
            "spec": spec if spec.is_absolute() else root / spec,
            "dataset": dataset,
            "overrides": dict(overrides),
            "versions": {str(k): str(v) for k, v in versions.items()},
        }
    return out


class ModelResolver(FolderResolver):
    """fingerprint -> world-model folder, from given folders or the registry (regenerating)."""

    _sentinel = "config.json"

    def __init__(
        self,
        models: list[str | Path] = (),
        registry: str | Path | None = None,
        cache_dir: str | Path | None = None,
        datasets: DatasetResolver | None = None,
    ):
        from ksmith.models import model_fingerprint
        from ksmith.pipeline.commands import resolve_model

        self._folders: dict[str, Path] = {}
        for m in models:
            folder = Path(resolve_model(m))
            if not folder.is_dir():
                raise KsmithError(f"--models {m}: not a model folder")
            self._folders.setdefault(model_fingerprint(folder), folder)
        self._registry_path = Path(registry) if registry else None
        self._registry = read_model_registry(registry) if registry else {}
        self._cache = Path(cache_dir) if cache_dir else default_cache_dir()
        self._datasets = datasets

    def known(self, fingerprint: str | None) -> bool:
        return fingerprint is not None and (
            fingerprint in self._folders or fingerprint in self._registry
        )

    def _fingerprint(self, folder: Path) -> str:
        from ksmith.models import model_fingerprint

        return model_fingerprint(folder)

    def _build(self, fingerprint: str, entry: dict[str, Any], out: Path) -> None:
        where = {"file": self._registry_path, "field": fingerprint}
        if not Path(entry["spec"]).is_file():
            raise SpecError(f"world-model spec {entry['spec']} does not exist", **where)
        if self._datasets is None:
            raise SpecError("no dataset resolver to find the training dataset", **where)
        dataset = self._datasets.resolve(entry["dataset"])
        if dataset is None:
            raise SpecError(
                f"its dataset {entry['dataset']} is not in datasets.yaml nor given with --datasets",
                file=self._registry_path,
                field=f"{fingerprint}.dataset",
            )
        from ksmith.pipeline.params import as_overrides
        from ksmith.world.pretrain import pretrain
        from ksmith.world.spec import load_world_spec

        spec = load_world_spec(entry["spec"], list(as_overrides(entry["overrides"])))
        log.info(
            "regenerating world model %s from %s into %s", fingerprint[:12], entry["spec"], out
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        with one_thread():
            pretrain(dataset, out, spec, device="cpu")

    def _mismatch(self, fingerprint: str, entry: dict[str, Any], got: str) -> SpecError:
        from ksmith.world.pretrain import library_versions

        have = ", ".join(f"{k} {v}" for k, v in library_versions().items())
        listed = ", ".join(f"{k} {v}" for k, v in (entry.get("versions") or {}).items())
        return SpecError(
            f"world-model spec {entry['spec']} regenerates fingerprint {got}, not the one "
            f"listed; weights are reproducible with the same library versions and CPU (listed: "
            f"{listed or 'not recorded'}; here: {have})",
            file=self._registry_path,
            field=fingerprint,
        )


class one_thread:
    """Run torch on one CPU thread inside the block (the pipeline's setting: float sums in
    the same order as the run being re-executed), restoring the previous count after."""

    def __enter__(self) -> one_thread:
        import torch

        self._before = torch.get_num_threads()
        torch.set_num_threads(1)
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self._before)
