"""A submission's unlearning rows: what `verify` needs to recompute the metrics against the
retain model (issue 12, docs/unlearning.md).

An unlearn cell evaluated with ``--retain`` claims the metrics of
`ksmith.evaluate.retain_metrics.cell_metrics` (forget quality, retain agreement, ...). They are
numbers about two models, so a submission claiming them carries, beside ``predictions.parquet``:

- ``items.parquet``: the per-item teacher-forced token scores (`ksmith.evaluate.unlearn_items`,
  ``ITEMS_SCHEMA``) of the submitted model after its update (``model`` = ``unlearned``) and of
  the retain model (``model`` = ``retain``), plus ``config``; each model's rows of a config in the
  evaluator's own order (bootstrap intervals resample items by position);
- ``retain_predictions.parquet``: the retain model's predictions on those configs, in
  ``predictions.parquet``'s format (checked against the dataset like any prediction);
- ``retain.json``: per config the closure facts its probes ask that the retain model lacks
  (``removed``, from the retain model's retain.json) and the retain model's fingerprints.

`verify` recomputes every claimed name with `cell_metrics` itself and rejects a claim without
these rows. Older submissions and edit-only ones have none of the three files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ksmith.errors import KsmithError, SpecError
from ksmith.evaluate.retain_eval import RETAIN_FILE
from ksmith.evaluate.retain_metrics import BASE_NAMES
from ksmith.evaluate.unlearn_items import ITEMS_FILE, ROLES, SIDES
from ksmith.leaderboard.predictions import read_predictions, write_predictions
from ksmith.leaderboard.schema import PREDICTIONS_FILE, Cell

log = logging.getLogger(__name__)

RETAIN_PREDICTIONS_FILE = "retain_predictions.parquet"
FILES = (ITEMS_FILE, RETAIN_PREDICTIONS_FILE, RETAIN_FILE)
MODELS = ("unlearned", "retain")
RETAIN_METRICS = BASE_NAMES  # the names that need a submission's unlearning rows

# Bounds (per config and model, from the card's probe count): a fact's rows are one correct and
# one perturbed row (each mcq distractor) per prompt, its prompts are probes, and the
# relearning attack adds at most three rows per request.
ITEM_ROWS_PER_PROBE = 16
BYTES_PER_ITEM_ROW = 16384  # the prompt may carry an in-context prefix
RETAIN_JSON_BYTES_PER_CONFIG = 1 << 20


def claimed(cell: Cell) -> list[str]:
    """The cell's metric names that `cell_metrics` produces (they need the unlearning rows)."""
    return sorted(
        n for n in cell.metrics if n.partition("@")[0].partition(".")[0] in RETAIN_METRICS
    )


@dataclass
class UnlearningRows:
    """Per config: both models' item rows, the retain model's predictions and what it lacks."""

    items: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    predictions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    retain: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def configs(self) -> list[str]:
        return sorted(self.retain)


# ---------------------------------------------------------------------------------------------
# submit: from evaluation folders


def _retain_cells(retain_dir: Path) -> dict[str, list[Path]]:
    """config -> the retain stage's cell folders evaluating it."""
    out: dict[str, list[Path]] = {}
    for path in sorted(retain_dir.glob("*/metrics.json")):
        try:
            config = json.loads(path.read_text()).get("config")
        except json.JSONDecodeError as e:
            raise SpecError(f"not valid JSON: {e}", file=path) from e
        if isinstance(config, str):
            out.setdefault(config, []).append(path.parent)
    return out


def _retain_cell(retain_dir: Path, result: Path, config: str, cells: dict[str, list[Path]]):
    """The retain model's evaluation of `config`: the folder named like the result's (the
    pipeline names both `<config>.s<seed>`), else the only one of that config."""
    same = retain_dir / result.name
    if same in cells.get(config, []):
        return same
    found = cells.get(config, [])
    if len(found) != 1:
        what = "no folder" if not found else f"{len(found)} folders"
        raise KsmithError(
            f"--retain {retain_dir}: {what} for config {config} (needed by {result}, whose "
            "metrics.json has metrics against the retain model)"
        )
    return found[0]


def collect(
    results: Sequence[tuple[Path, Mapping[str, Any]]], retain_dir: str | Path | None
) -> UnlearningRows:
    """The unlearning rows of every result (folder, metrics.json) claiming `cell_metrics`
    names; `retain_dir` is the retain stage's folder (`out/retain-results`)."""
    from ksmith.evaluate.unlearn_items import read_items

    out = UnlearningRows()
    claiming = [
        (folder, m) for folder, m in results
        if any(n.partition("@")[0].partition(".")[0] in RETAIN_METRICS for n in m["metrics"])
    ]  # fmt: skip
    if not claiming:
        if retain_dir is not None:
            log.info("--retain %s: no cell has metrics against the retain model", retain_dir)
        return out
    if retain_dir is None:
        names = ", ".join(str(f) for f, _ in claiming)
        raise KsmithError(
            f"{names}: metrics against the retain model, which a submission must back with the "
            "retain model's rows; pass --retain (the retain stage's folder, out/retain-results)"
        )
    retain_dir = Path(retain_dir)
    cells = _retain_cells(retain_dir)
    for folder, m in claiming:
        config = str(m["config"])
        ref = _retain_cell(retain_dir, folder, config, cells)
        doc_path = ref / RETAIN_FILE
        if not doc_path.is_file():
            raise SpecError("missing file (the retain model's evaluation writes it)", file=doc_path)
        doc = json.loads(doc_path.read_text())
        out.items[config] = {"unlearned": read_items(folder), "retain": read_items(ref)}
        out.predictions[config] = [
            {**r, "config": config}
            for r in read_predictions(ref / PREDICTIONS_FILE, with_config=False)
        ]
        out.retain[config] = {
            "removed": sorted([str(x) for x in t] for t in doc.get("removed", [])),
            "model_fingerprint": doc.get("model_fingerprint"),
            "forget_fingerprint": doc.get("forget_fingerprint"),
        }
    return out


def write(folder: Path, rows: UnlearningRows) -> None:
    """The three files into a submission folder (nothing when no cell claims the metrics)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ksmith.evaluate.unlearn_items import ITEMS_SCHEMA

    if not rows.configs:
        return
    schema = pa.schema([("config", pa.string()), ("model", pa.string()), *ITEMS_SCHEMA])
    flat = [
        {"config": c, "model": who, **r}
        for c in rows.configs
        for who in MODELS
        for r in rows.items[c][who]
    ]
    pq.write_table(pa.Table.from_pylist(flat, schema=schema), folder / ITEMS_FILE,
                   compression="zstd")  # fmt: skip
    write_predictions(folder / RETAIN_PREDICTIONS_FILE, [r for c in rows.configs
                                                         for r in rows.predictions[c]])  # fmt: skip
    doc = {"configs": {c: rows.retain[c] for c in rows.configs}}
    (folder / RETAIN_FILE).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------
# verify: read, bounded, and recompute


def _fail(message: str, file: str, field: str | None = None) -> SpecError:
    return SpecError(message, file=file, field=field)


def _items_table(path: Path, max_rows: int):
    """The items table, after row count and sizes are checked from the parquet footer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ksmith.leaderboard.checks import BoardPolicy, predictions_bounds_error

    policy = BoardPolicy(bytes_per_row=BYTES_PER_ITEM_ROW)
    bad = predictions_bounds_error(path, max_rows, policy)
    if bad is not None:
        raise _fail(bad, ITEMS_FILE)
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise _fail(f"not a readable parquet file ({e})", ITEMS_FILE) from e


def _check_columns(table) -> None:
    import pyarrow.types as t

    from ksmith.evaluate.unlearn_items import ITEMS_SCHEMA

    for name in ("config", "model", *ITEMS_SCHEMA.names):
        if name not in table.column_names:
            raise _fail("missing column", ITEMS_FILE, name)
        if table.column(name).null_count:
            raise _fail("column has null values", ITEMS_FILE, name)
    types = {name: table.schema.field(name).type for name in table.column_names}
    for name in ("config", "model", "side", "item", "role", "prompt", "answer"):
        if not (t.is_string(types[name]) or t.is_large_string(types[name])):
            raise _fail(f"column has type {types[name]}, expected string", ITEMS_FILE, name)
    if not t.is_integer(types["group"]):
        raise _fail(f"column has type {types['group']}, expected int", ITEMS_FILE, "group")
    for name, ok in (("logprobs", t.is_floating), ("hits", t.is_boolean)):
        typ = types[name]
        if not (t.is_list(typ) or t.is_large_list(typ)) or not ok(typ.value_type):
            raise _fail(f"column has type {typ}, expected a list", ITEMS_FILE, name)


def _check_rows(rows: list[dict[str, Any]]) -> None:
    import math

    for i, r in enumerate(rows):
        where = f"row {i} ({r['config']} {r['model']} {r['item']})"
        for col, allowed in (("model", MODELS), ("side", SIDES), ("role", ROLES)):
            if r[col] not in allowed:
                raise _fail(f"{where}: {r[col]!r} is not one of {allowed}", ITEMS_FILE, col)
        lp, hits = r["logprobs"], r["hits"]
        if not lp or len(lp) != len(hits) or any(x is None for x in (*lp, *hits)):
            raise _fail(f"{where}: needs one log-prob and one hit per answer token",
                        ITEMS_FILE, "logprobs")  # fmt: skip
        if any(not math.isfinite(x) or x > 0.0 for x in lp):
            raise _fail(f"{where}: a token log-probability must be finite and at most 0",
                        ITEMS_FILE, "logprobs")  # fmt: skip
        if len(r["item"].split("|")) != 4:
            raise _fail(f"{where}: item is not '<request>|<subject>|<relation>|<object>'",
                        ITEMS_FILE, "item")  # fmt: skip


def _read_retain_json(folder: Path, configs: Sequence[str]) -> dict[str, Any]:
    path = folder / RETAIN_FILE
    limit = RETAIN_JSON_BYTES_PER_CONFIG * max(1, len(configs))
    if path.stat().st_size > limit:
        raise _fail(f"{path.stat().st_size} bytes; at most {limit} expected", RETAIN_FILE)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _fail(f"not valid JSON: {e}", RETAIN_FILE) from e
    cells = doc.get("configs") if isinstance(doc, dict) else None
    if not isinstance(cells, dict):
        raise _fail("expected an object with a 'configs' object", RETAIN_FILE, "configs")
    out = {}
    for config, entry in cells.items():
        removed = entry.get("removed") if isinstance(entry, dict) else None
        ok = isinstance(removed, list) and all(
            isinstance(t, list) and len(t) == 3 and all(isinstance(x, str) for x in t)
            for t in removed
        )
        if not ok:
            raise _fail("expected a list of [subject, relation, object]", RETAIN_FILE,
                        f"configs.{config}.removed")  # fmt: skip
        out[config] = {**entry, "removed": {tuple(t) for t in removed}}
    return out


def read(
    folder: Path, card: Mapping[str, Any], sub_configs: Sequence[str], policy
) -> UnlearningRows | None:
    """A submission's unlearning rows, sizes bounded by the card's probe counts; None when it
    has none of the files (an older or edit-only submission). Errors are `SpecError`s naming
    the file (relative to the submission folder) and the field."""
    present = [name for name in FILES if (folder / name).exists()]
    if not present:
        return None
    for name in FILES:
        if name not in present:
            raise _fail(f"missing file (a submission with {present[0]} needs all of "
                        f"{', '.join(FILES)})", name)  # fmt: skip
    from ksmith.leaderboard.checks import max_rows

    counts = card.get("counts") or {}
    probes = sum(int(counts.get(c, {}).get("probes", 0)) for c in sub_configs)
    table = _items_table(folder / ITEMS_FILE, probes * ITEM_ROWS_PER_PROBE * len(MODELS))
    _check_columns(table)
    from ksmith.evaluate.unlearn_items import ITEMS_SCHEMA

    rows = table.select(["config", "model", *ITEMS_SCHEMA.names]).to_pylist()
    _check_rows(rows)
    retain = _read_retain_json(folder, sub_configs)
    limit = max_rows(counts, sub_configs, policy)
    from ksmith.leaderboard.checks import predictions_bounds_error

    bad = predictions_bounds_error(folder / RETAIN_PREDICTIONS_FILE, limit, policy)
    if bad is not None:
        raise _fail(bad, RETAIN_PREDICTIONS_FILE)
    try:
        preds = read_predictions(folder / RETAIN_PREDICTIONS_FILE)
    except SpecError as e:
        raise _fail(e.message, RETAIN_PREDICTIONS_FILE, e.field) from e

    out = UnlearningRows()
    for r in rows:
        config, who = r.pop("config"), r.pop("model")
        out.items.setdefault(config, {m: [] for m in MODELS})[who].append(r)
    for r in preds:
        out.predictions.setdefault(r["config"], []).append(r)
    out.retain = dict(retain)
    for name, have in ((ITEMS_FILE, out.items), (RETAIN_PREDICTIONS_FILE, out.predictions)):
        for config in sorted(set(have) ^ set(retain)):
            where = RETAIN_FILE if config in retain else name
            raise _fail(f"config {config!r} is in {where} only: {ITEMS_FILE}, "
                        f"{RETAIN_PREDICTIONS_FILE} and {RETAIN_FILE} must hold the same configs",
                        name, "config")  # fmt: skip
    for config in out.configs:
        if config not in sub_configs:
            raise _fail(f"rows for config {config!r}, which no cell declares", ITEMS_FILE, "config")
        for who in MODELS:
            if not out.items[config][who]:
                raise _fail(f"config {config!r} has no rows of the {who} model", ITEMS_FILE,
                            "model")  # fmt: skip
    return out


def recompute(
    config: str,
    probes: Sequence[Mapping[str, Any]],
    preds: Sequence[Mapping[str, Any]],
    retain_preds: Sequence[Mapping[str, Any]],
    rows: UnlearningRows,
    *,
    seed: int,
    n_boot: int,
) -> dict[str, dict[str, Any]]:
    """`cell_metrics` of one config from the submission's rows (predictions already rescored
    against the dataset); `removed` must be facts this config's probes ask."""
    from ksmith.evaluate.retain_metrics import cell_metrics

    removed = rows.retain[config]["removed"]
    asked = {(p["subject"], p["relation"], p["object"]) for p in probes}
    stray = sorted(removed - asked)
    if stray:
        raise _fail(f"{config}: removed fact {list(stray[0])} is not asked by any probe of the "
                    "config", RETAIN_FILE, f"configs.{config}.removed")  # fmt: skip
    items = rows.items[config]
    try:
        return cell_metrics(items["unlearned"], items["retain"], preds, retain_preds, probes,
                            removed, seed=seed, n_boot=n_boot)  # fmt: skip
    except KsmithError as e:
        raise _fail(f"{config}: {e}", ITEMS_FILE, "item") from e
