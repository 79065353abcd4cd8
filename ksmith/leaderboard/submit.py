"""`ksmith submit`: turn evaluation folders of one method into a leaderboard submission.

Each RESULTS_DIR (contract section 6) is one cell: its metrics.json gives the config and the
aggregates, eval.json the model and dataset, and the update.json of the update folder it names
(contract section 5), when present, the hyper-parameters and seed. The submission is written
atomically and never over a folder ksmith did not write.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ksmith import __version__
from ksmith.errors import KsmithError, SpecError
from ksmith.io import atomic_output_dir, canonical_json
from ksmith.leaderboard.predictions import read_predictions, write_predictions
from ksmith.leaderboard.schema import (
    ID_PATTERN,
    PREDICTIONS_FILE,
    SCHEMA_VERSION,
    SUBMISSION_FILE,
    Submission,
    dump_submission,
    validation_error,
)
from ksmith.leaderboard.unlearning import collect as collect_unlearning
from ksmith.leaderboard.unlearning import write as write_unlearning

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmitOptions:
    """What `ksmith submit` takes besides the results folders."""

    method_url: str | None = None
    method_version: str = ""
    dataset: str | Path | None = None  # dataset folder: suite name and fingerprint cross-check
    model_id: str | None = None  # overrides eval.json's model (e.g. a Hub id for a local path)
    model_revision: str | None = None
    with_updates: bool = False  # copy each cell's update artifacts (re-execution audit)
    # the retain stage's folder (out/retain-results): unlearn cells with metrics against the
    # retain model carry its rows and theirs (ksmith.leaderboard.unlearning)
    retain: str | Path | None = None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpecError("missing file", file=path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SpecError(f"not valid JSON: {e}", file=path) from e
    if not isinstance(data, dict):
        raise SpecError("expected a JSON object", file=path)
    return data


def _first(d: dict[str, Any], *keys: str) -> Any:
    """The first present, non-empty value among dotted `keys` (eval.json nests some fields)."""
    for key in keys:
        cur: Any = d
        for part in key.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if cur not in (None, ""):
            return cur
    return None


def _opt(ev: dict[str, Any], key: str, default: int) -> int:
    value = _first(ev, f"options.{key}", key)
    return int(value) if value is not None else default


@dataclass(frozen=True)
class _Result:
    folder: Path
    eval: dict[str, Any]
    metrics: dict[str, Any]
    update: dict[str, Any]
    rows: list[dict[str, Any]]
    update_dir: Path | None = None


def _read_result(folder: Path) -> _Result:
    ev = _read_json(folder / "eval.json")
    metrics = _read_json(folder / "metrics.json")
    for key in ("config", "method", "kind", "level", "scale", "metrics"):
        if key not in metrics:
            raise SpecError("missing field", file=folder / "metrics.json", field=key)
    update: dict[str, Any] = {}
    found: Path | None = None
    update_dir = _first(ev, "update", "update_dir")
    if isinstance(update_dir, str):
        path = Path(update_dir)
        if not path.is_absolute() and not path.exists():
            path = folder / update_dir
        if not (path / "update.json").is_file():
            # without it the submission would carry no hyper-parameters and no seed, and the
            # re-execution audit could not run it
            raise SpecError(
                f"the update folder {update_dir!r} has no update.json, neither from {Path.cwd()} "
                f"nor from {folder}; run submit where the evaluation ran",
                file=folder / "eval.json",
                field="update" if _first(ev, "update") else "update_dir",
            )
        update = _read_json(path / "update.json")
        found = path
    rows = read_predictions(folder / PREDICTIONS_FILE, with_config=False)
    return _Result(folder, ev, metrics, update, rows, found)


def _same(results: list[_Result], what: str, values: list[Any]) -> Any:
    distinct = {canonical_json(v) for v in values}
    if len(distinct) > 1:
        listing = ", ".join(f"{r.folder}: {v!r}" for r, v in zip(results, values, strict=True))
        raise KsmithError(f"results folders disagree on {what}: {listing}")
    return values[0]


def _split_params(
    per_result: list[dict[str, Any]],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Hyper-parameters shared by every cell, and per cell the ones that differ from them."""
    keys = sorted({k for p in per_result for k in p})
    enc = [{k: json.dumps(p.get(k), sort_keys=True) for k in keys} for p in per_result]
    common = {
        k: per_result[0][k]
        for k in keys
        if k in per_result[0] and all(e[k] == enc[0][k] for e in enc)
    }
    return common, [{k: v for k, v in p.items() if k not in common} for p in per_result]


def _editor(method: str, per_result: list[dict[str, Any]], model_fp: Any) -> dict | None:
    """The trained editor the cells ran (`ksmith.methods.trained.editor.editor_identity`), or
    None for a method without one. Its `editor_path` is read from where the update ran."""
    from ksmith.methods.trained.commands import TRAINED_METHODS

    paths = sorted({str(p["editor_path"]) for p in per_result if p.get("editor_path")})
    if method not in TRAINED_METHODS or not paths:
        return None
    from ksmith.methods.trained.editor import editor_identity, read_editor  # imports torch

    if len(paths) > 1:
        raise KsmithError(
            f"the cells ran {method} with different editors ({', '.join(paths)}); a submission "
            "records one trained editor"
        )
    folder = Path(paths[0])
    try:
        card, _ = read_editor(folder, method, str(model_fp))
    except KsmithError as e:
        raise SpecError(
            f"the update's trained editor cannot be read from {Path.cwd()} ({e}); run submit "
            "where the update ran: the submission records the editor's fingerprint and training "
            "settings, by which the re-execution audit finds or retrains it",
            field="method.params.editor_path",
        ) from e
    return editor_identity(card, folder)


def _suite_of(folder: Path, fingerprint: str) -> str | None:
    """The suite name from the card of the dataset folder eval.json recorded, if it is there
    and still has the evaluated fingerprint."""
    from ksmith.data import read_card

    try:
        card = read_card(folder)
    except KsmithError:
        return None
    return card.get("suite") if card.get("fingerprint") == fingerprint else None


def build_submission(
    results_dirs: list[str | Path], sub_id: str, options: SubmitOptions = SubmitOptions()
) -> tuple[Submission, list[dict[str, Any]]]:
    """The submission record and its prediction rows (with `config`), from results folders."""
    import re

    if not re.match(ID_PATTERN, sub_id):
        raise SpecError(f"submission id {sub_id!r} must match {ID_PATTERN}", field="id")
    if not results_dirs:
        raise KsmithError("no results folders given")
    results = [_read_result(Path(d)) for d in results_dirs]
    method = _same(results, "method", [str(r.metrics["method"]) for r in results])
    fingerprint = _same(
        results,
        "dataset fingerprint",
        [_first(r.eval, "dataset_fingerprint", "dataset.fingerprint") for r in results],
    )
    _same(
        results,
        "model (eval.json model.fingerprint, else model.path)",
        [_first(r.eval, "model.fingerprint", "model.path", "model") for r in results],
    )
    model = _first(results[0].eval, "model.id", "model.path", "model")
    params, cell_params = _split_params([r.update.get("params") or {} for r in results])
    boot = _same(
        results,
        "bootstrap settings (eval.json options.seed, options.n_boot)",
        [(_opt(r.eval, "seed", 0), _opt(r.eval, "n_boot", 1000)) for r in results],
    )
    configs = [r.metrics["config"] for r in results]
    dup = sorted({c for c in configs if configs.count(c) > 1})
    if dup:
        raise KsmithError(f"more than one results folder for config(s) {', '.join(dup)}")

    suite = _first(results[0].eval, "suite", "dataset.suite")
    recorded = _first(results[0].eval, "dataset.path")
    if not suite and options.dataset is None and isinstance(recorded, str):
        suite = _suite_of(Path(recorded), fingerprint)
    if options.dataset is not None:
        from ksmith.data import read_card

        card = read_card(options.dataset)
        if card["fingerprint"] != fingerprint:
            raise KsmithError(
                f"--dataset {options.dataset} has fingerprint {card['fingerprint']}, but the "
                f"results were evaluated on {fingerprint}"
            )
        suite = card["suite"]
    if not suite:
        raise KsmithError("eval.json names no suite; pass --dataset DIR (the evaluated dataset)")

    first_update = results[0].update
    model_fp = _first(first_update, "model.fingerprint") or _first(
        results[0].eval, "model.fingerprint", "model_fingerprint"
    )
    seeds = sorted(
        {
            int(s)
            for r in results
            for s in [_first(r.update, "seed", "params.seed")]
            if s is not None
        }
    )
    raw = {
        "schema_version": SCHEMA_VERSION,
        "id": sub_id,
        "method": {
            "name": method,
            "version": options.method_version or str(_first(first_update, "method_version") or ""),
            "url": options.method_url,
            "params": params,
            "mode": _same(results, "update mode", [r.update.get("mode", "batch") for r in results]),
            "editor": _editor(method, [r.update.get("params") or {} for r in results], model_fp),
        },
        "model": {
            "id": options.model_id or str(model),
            "revision": options.model_revision or _first(results[0].eval, "model.revision"),
            "fingerprint": model_fp,
            "dtype": str(_first(results[0].eval, "dtype", "model.dtype") or "float32"),
            **_model_abilities(_first(results[0].eval, "model.path", "model")),
        },
        "dataset": {"suite": suite, "fingerprint": fingerprint},
        "ksmith_version": str(
            _first(results[0].eval, "versions.ksmith", "ksmith_version")
            or _first(first_update, "ksmith_version")
            or __version__
        ),
        "hardware": {
            "device": str(_first(first_update, "device", "hardware.device") or "cpu"),
            "name": str(_first(first_update, "hardware.name", "device_name") or ""),
            "count": int(_first(first_update, "hardware.count") or 1),
        },
        "seeds": seeds,
        "bootstrap": {"seed": int(boot[0]), "n_boot": int(boot[1])},
        "cells": [
            {
                "config": r.metrics["config"],
                "method": r.metrics["method"],
                "kind": r.metrics["kind"],
                "level": r.metrics["level"],
                "scale": r.metrics["scale"],
                "params": extra,
                "metrics": r.metrics["metrics"],
            }
            for r, extra in sorted(
                zip(results, cell_params, strict=True), key=lambda x: x[0].metrics["config"]
            )
        ],
    }
    try:
        sub = Submission.model_validate(raw)
    except ValidationError as e:
        raise validation_error(e, f"submission {sub_id}") from e
    rows = [{**row, "config": r.metrics["config"]} for r in results for row in r.rows]
    return sub, rows


def write_submission(
    results_dirs: list[str | Path], out: str | Path, options: SubmitOptions = SubmitOptions()
) -> Submission:
    """Build the submission named after `out`'s folder name and write it there atomically."""
    out = Path(out)
    sub, rows = build_submission(results_dirs, out.name, options)
    updates = _update_folders(results_dirs) if options.with_updates else {}
    results = [(Path(d), _read_json(Path(d) / "metrics.json")) for d in results_dirs]
    unlearning = collect_unlearning(results, options.retain)
    inputs = [*results_dirs, *([options.retain] if unlearning.configs else [])]
    with atomic_output_dir(out, kind="submission", inputs=inputs) as tmp:
        (tmp / SUBMISSION_FILE).write_text(dump_submission(sub), encoding="utf-8")
        write_predictions(tmp / PREDICTIONS_FILE, rows)
        write_unlearning(tmp, unlearning)
        for config, src in sorted(updates.items()):
            _copy_update(src, tmp / UPDATES_DIR / config)
    log.info("wrote submission %s (%d cells, %d predictions)", out, len(sub.cells), len(rows))
    return sub


UPDATES_DIR = "updates"  # ksmith.leaderboard.audit reads it


def _update_folders(results_dirs: list[str | Path]) -> dict[str, Path]:
    """config -> the update folder each results folder was evaluated with; every cell must
    have one (a no-update baseline has nothing to carry)."""
    out = {}
    for d in results_dirs:
        r = _read_result(Path(d))
        if r.update_dir is None:
            raise KsmithError(
                f"{d}: --with-updates, but eval.json names no update folder with an update.json"
            )
        out[str(r.metrics["config"])] = r.update_dir
    return out


def _copy_update(src: Path, dst: Path) -> None:
    """The update record, resolved spec and each group's artifact (delta, prefixes or model);
    the per-step logs stay behind. Links are refused: a submission holds its own files."""
    import shutil

    from ksmith.methods.artifacts import LOG_FILE

    for path in sorted(src.rglob("*")):
        if path.is_symlink():
            raise KsmithError(f"{path}: a symbolic link in an update folder; refusing to copy it")
        rel = path.relative_to(src)
        if path.is_dir() or path.name == LOG_FILE:
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dst / rel)


def _model_abilities(path: Any) -> dict[str, Any]:
    """The capability profile a world-model card records (`abilities`, `below_threshold`), or
    nothing when the evaluated model is not a local folder with such a card."""
    from ksmith.pipeline.commands import resolve_model
    from ksmith.world.card import read_model_card

    if not path or not Path(str(path)).is_dir():
        return {}
    card = read_model_card(resolve_model(str(path)))
    if not card.get("abilities"):
        return {}
    return {
        "abilities": dict(card["abilities"]),
        "below_threshold": list(card.get("below_threshold") or []),
    }
