"""The evaluator's unlearning step: items.parquet, retain.json and the retain-model metrics.

Called by `ksmith.evaluate.runner.evaluate` for every unlearn config (docs/unlearning.md):

1. per group, under the group's unlearned model (or the evaluated model itself without an
   update), the rows of `ksmith.evaluate.unlearn_items.group_rows` go to items.parquet;
2. when the evaluated model is a retain model (its folder has `forget_set.json`), retain.json
   names it (fingerprints) and lists the closure facts this config asks that it lacks;
3. with `retain` (the retain model's evaluation folder of the same config) the metrics of
   `ksmith.evaluate.retain_metrics.cell_metrics` are returned for metrics.json.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ksmith.errors import KsmithError

log = logging.getLogger(__name__)

RETAIN_FILE = "retain.json"


def unlearn_cell(
    lazy,
    hooks,
    dataset: Path,
    config: str,
    probes: Sequence[Mapping[str, Any]],
    before,
    after,
    update_dir: Path | None,
    options,
    out: Path,
    *,
    model: str,
    retain: Path | None,
    dataset_fp: str | None = None,
    model_fp: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Write items.parquet (and retain.json for a retain model) into `out`; return the
    retain-model metrics (empty without `retain`)."""
    from ksmith.evaluate.unlearn_items import group_rows, write_items

    base, tokenizer = lazy.get()

    def make(m):
        return hooks.make_backend(m, tokenizer, options)

    if not hasattr(make(base), "token_logprobs"):
        if retain is not None:
            raise KsmithError(
                f"backend {options.backend}: no per-token scores, so no metrics against the "
                "retain model (they need the hf backend)"
            )
        log.warning("backend %s: no per-token scores; items.parquet not written", options.backend)
        return {}
    load_requests = hooks.load_requests
    if load_requests is None:
        from ksmith.data import load_requests
    requests = load_requests(dataset, config)
    rows: list[dict[str, Any]] = []
    for g in sorted({int(p["group"]) for p in probes}):
        gp = [p for p in probes if int(p["group"]) == g]
        gr = [r for r in requests if int(r["group"]) == g]
        kw = {"config": config, "group": g, "seed": options.seed}
        if update_dir is None:
            rows += group_rows(base, tokenizer, make, gp, gr, **kw)
        else:
            with hooks.applied_update(base, update_dir, g) as (updated, prefixes):
                rows += group_rows(updated, tokenizer, make, gp, gr, prefixes=prefixes, **kw)
    write_items(out, rows)
    _write_retain_file(model, model_fp, probes, out)
    if retain is None:
        return {}
    return against_retain(rows, retain, config, probes, before, after, options, dataset_fp)


def _write_retain_file(
    model: str, model_fp: str | None, probes: Sequence[Mapping[str, Any]], out: Path
) -> None:
    """retain.json when `model` is a retain model (fingerprint `model_fp`, computed when not
    given): the closure facts this config's probes ask that it lacks (`forget_set.json`'s
    ``removed``), and its fingerprints."""
    from ksmith.io import write_json
    from ksmith.world.retain import FORGET_FILE

    path = Path(model) / FORGET_FILE
    if not path.is_file():
        return
    doc = json.loads(path.read_text())
    # (s, r, o) names are unique within a domain; a config's probes name its domain's only
    removed = {tuple(t) for d in doc["domains"].values() for t in d["removed"]}
    asked = sorted({(p["subject"], p["relation"], p["object"]) for p in probes} & removed)
    if model_fp is None:
        from ksmith.models import model_fingerprint

        model_fp = model_fingerprint(model)
    write_json(out / RETAIN_FILE, {
        "model_fingerprint": model_fp,
        "forget_fingerprint": doc["fingerprint"],
        "removed": [list(t) for t in asked],
    })  # fmt: skip


def read_retain_cell(folder: Path, config: str, dataset_fp: str | None = None) -> dict[str, Any]:
    """The retain model's evaluation of `config` (on the dataset of fingerprint `dataset_fp`):
    its retain.json, checked against the folder's metrics.json and eval.json."""
    path = folder / RETAIN_FILE
    if not path.is_file():
        raise KsmithError(
            f"{path}: not found; --retain must be the retain model's evaluation of the config "
            "(the retain stage's cell folder)"
        )
    doc = json.loads(path.read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    if metrics.get("config") != config:
        raise KsmithError(
            f"{folder}/metrics.json: field 'config' is {metrics.get('config')!r}, not {config!r}"
        )
    record = json.loads((folder / "eval.json").read_text())
    if dataset_fp is not None and record.get("dataset", {}).get("fingerprint") != dataset_fp:
        raise KsmithError(
            f"{folder}/eval.json: field 'dataset.fingerprint' is not the evaluated dataset's "
            f"({dataset_fp[:12]}): the retain model was evaluated on another dataset"
        )
    if record.get("model", {}).get("fingerprint") != doc.get("model_fingerprint"):
        raise KsmithError(
            f"{path}: field 'model_fingerprint' is not the evaluated model's ({folder}/eval.json)"
        )
    return doc


def against_retain(
    rows, retain: Path, config: str, probes, before, after, options, dataset_fp: str | None = None
) -> dict[str, dict[str, Any]]:
    from ksmith.evaluate.outputs import prediction_rows, read_predictions
    from ksmith.evaluate.retain_metrics import cell_metrics
    from ksmith.evaluate.unlearn_items import read_items

    doc = read_retain_cell(retain, config, dataset_fp)
    removed = {tuple(t) for t in doc["removed"]}
    return cell_metrics(
        rows, read_items(retain), prediction_rows(probes, before, after),
        read_predictions(retain), probes, removed, seed=options.seed, n_boot=options.n_boot,
    )  # fmt: skip
