"""Lifelong editing, evaluated along the stream: metrics at each checkpoint of a sequential update.

A sequential update with declared checkpoints (``ksmith update --mode sequential --checkpoints
1,10,100``) saves each group's state after its first n requests as
``g<i>/checkpoints/<n>/`` (docs/contracts.md section 5, docs/lifelong.md). At checkpoint n the
group is scored on

- Q+: the probes of the n requests made so far (``checkpoint.json`` lists them), so efficacy
  is the success on every edit made so far (retention of the earlier ones), generalization and
  propagation those of the same requests;
- Q-: every Q- probe of the group, and the same drift prompts, as for the final state.

The before stage is the one the ordinary evaluation measured (restricted to those probes), and
the numbers come from the same functions: `compute_metrics` on the prediction rows and
`model_metrics` for drift. Groups are pooled at each n (like the groups of a cell). The final
state (n = k) is the cell's ordinary result, copied from its metrics. Fluency is not measured
along the stream. Output: ``checkpoints.json`` next to the cell's metrics.json:

    {"config", "method", "kind", "level", "scale",
     "checkpoints": [{"edits": n, "final": bool, "groups": [...], "requests": int,
                      "probes": int, "metrics": {NAME: {value, ci, n, mode}}}, ...]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from ksmith.evaluate.cache import StageMeasures
from ksmith.evaluate.measure import measure_after_group, merge_measures
from ksmith.evaluate.metrics import compute_metrics, parse_metric_name
from ksmith.evaluate.outputs import model_metrics, prediction_rows

if TYPE_CHECKING:
    from ksmith.evaluate.runner import EvalOptions, Hooks

CHECKPOINTS_FILE = "checkpoints.json"
DRIFT = ("drift_kl", "drift_cka")


def saved_checkpoints(update_info: Mapping[str, Any]) -> dict[int, list[int]]:
    """group -> the counts of edits saved for it (update.json's per-group ``checkpoints``)."""
    out = {}
    for g in update_info.get("groups") or ():
        counts = g.get("checkpoints") if isinstance(g, Mapping) else None
        if counts:
            out[int(g["group"])] = [int(n) for n in counts]
    return out


def along_stream(metrics: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The metrics reported at checkpoints: the prediction-derived ones and drift."""
    from ksmith.evaluate.metrics import METRICS

    out = {}
    for name, m in metrics.items():
        base = parse_metric_name(name)[0]
        meta = METRICS.meta(base) if base in METRICS.names() else {}
        if base in DRIFT or (
            meta.get("source") == "predictions" and kind in meta.get("kinds", (kind,))
        ):
            out[name] = m
    return dict(sorted(out.items()))


def _restrict_before(before: StageMeasures, ids: set[str], groups: set[int]) -> StageMeasures:
    """The before stage's judgements of `ids` and its drift rows of `groups` (same order)."""
    rows = [i for i, (g, _) in enumerate(before.drift_prompts) if g in groups]

    def take(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[rows]

    return StageMeasures(
        judgements=[j for j in before.judgements if j["probe_id"] in ids],
        drift_prompts=[before.drift_prompts[i] for i in rows],
        logprobs=take(before.logprobs),
        hidden=take(before.hidden),
    )


def checkpoint_probes(
    probes: Sequence[Mapping[str, Any]], group: int, made: set[str]
) -> list[Mapping[str, Any]]:
    """A group's probes scored at a checkpoint: Q+ of the requests made so far, all Q-."""
    return [
        p
        for p in probes
        if int(p["group"]) == group and (p["qset"] != "Q+" or p["request_id"] in made)
    ]


def evaluate_checkpoints(
    model: Any,
    tokenizer: Any,
    hooks: Hooks,
    probes: Sequence[Mapping[str, Any]],
    before: StageMeasures,
    update_dir: Path,
    update_info: Mapping[str, Any],
    final: Mapping[str, Any],
    options: EvalOptions,
) -> dict[str, Any]:
    """Score every saved checkpoint of `update_dir` (module docstring); `final` is the cell's
    metrics.json content (its state after all k edits). Returns checkpoints.json's content."""
    from ksmith.methods.artifacts import read_checkpoint

    kind = final["kind"]
    saved = saved_checkpoints(update_info)
    quiet = options.model_copy(update={"fluency_prompts": 0})
    entries = []
    for n in tqdm(sorted({c for cs in saved.values() for c in cs}), desc="checkpoints"):
        groups = sorted(g for g, cs in saved.items() if n in cs)
        selected: list[Mapping[str, Any]] = []
        parts = []
        for g in groups:
            made = set(read_checkpoint(update_dir, g, n)["requests"])
            gp = checkpoint_probes(probes, g, made)
            with hooks.applied_update(model, update_dir, g, checkpoint=n) as (updated, prefixes):
                backend = hooks.make_backend(updated, tokenizer, options)
                parts.append(measure_after_group(backend, gp, prefixes, g, quiet))
            selected += gp
        after = merge_measures(parts)
        ref = _restrict_before(before, {p["id"] for p in selected}, set(groups))
        rows = prediction_rows(selected, ref, after)
        metrics = compute_metrics(
            selected, rows, kind=kind, seed=options.seed, n_boot=options.n_boot
        )
        metrics.update(model_metrics(ref, after, quiet))
        entries.append({
            "edits": n, "final": False, "groups": groups, "requests": n * len(groups),
            "probes": len(selected), "metrics": along_stream(metrics, kind),
        })  # fmt: skip
    groups = update_info.get("groups") or []
    k = max((int(g.get("requests", 0)) for g in groups), default=int(final["scale"]))
    entries.append({
        "edits": k, "final": True, "groups": sorted(int(g["group"]) for g in groups),
        "requests": sum(int(g.get("requests", 0)) for g in groups), "probes": len(probes),
        "metrics": along_stream(final["metrics"], kind),
    })  # fmt: skip
    head = {key: final[key] for key in ("config", "method", "kind", "level", "scale")}
    return {**head, "checkpoints": entries}
