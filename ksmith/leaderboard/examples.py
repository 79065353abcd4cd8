"""Example predictions of a submission, for the page's drill-down.

For each cell (config) of a submission, the first group's first probe of each type the
composite reads (direct, paraphrase, reverse, multi_hop, comparison, contextual), scored in its
cloze mode (else the first mode it has): the prompt and expected answers from the released
dataset (after an unlearning: "not <old answer>"), the predictions before and after the update from the submission, and whether the
after-update answer counts as correct. Deterministic: the same files give the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ksmith.leaderboard.schema import PREDICTIONS_FILE

TYPES = ("direct", "paraphrase", "reverse", "multi_hop", "comparison", "contextual")
MODE_ORDER = ("cloze", "gen_exact", "gen_contains", "mcq")


def example_rows(
    folder: str | Path, dataset: str | Path | None, cache: dict[Any, Any] | None = None
) -> list[dict[str, Any]]:
    """The drill-down rows of the submission in `folder` (empty without its dataset); `cache`
    keeps each config's probes for the next submission on the same dataset."""
    if dataset is None:
        return []
    from ksmith.data import load_probes

    cache = {} if cache is None else cache

    import pyarrow.parquet as pq

    # The board verified the file already; only the first group's rows are read.
    columns = ["config", "probe_id", "group", "stage", "mode", "prediction", "correct"]
    rows = pq.read_table(
        Path(folder) / PREDICTIONS_FILE, columns=columns, filters=[("group", "=", 0)]
    ).to_pylist()
    preds: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for r in rows:
        preds.setdefault((r["config"], r["probe_id"], r["mode"]), {})[r["stage"]] = r
    out = []
    for config in sorted({c for c, _, _ in preds}):
        key = (str(dataset), config)
        if key not in cache:
            cache[key] = {p["id"]: p for p in load_probes(dataset, config)}
        probes = cache[key]
        for ptype in TYPES:
            chosen = None
            for pid in sorted(p for p in probes if probes[p]["type"] == ptype):
                if int(probes[pid]["group"]) != 0:
                    continue
                modes = [m for m in MODE_ORDER if (config, pid, m) in preds]
                if modes:
                    chosen = (pid, modes[0])
                    break
            if chosen is None:
                continue
            pid, mode = chosen
            probe, stages = probes[pid], preds[(config, pid, mode)]
            before, after = stages.get("before", {}), stages.get("after", {})
            out.append({
                "config": config, "type": ptype, "qset": probe.get("qset", ""), "mode": mode,
                "prompt": shown_prompt(probe), "expected_before": probe.get("answer_before") or "",
                "expected_after": (
                    f"not {probe.get('answer_after')}"  # unlearning: avoid the old answer
                    if probe.get("expect_after") == "avoid" else probe.get("answer_after") or ""
                ),
                "before": before.get("prediction", ""), "after": after.get("prediction", ""),
                "correct": bool(after.get("correct", False)),
            })  # fmt: skip
    return out


def shown_prompt(probe: Mapping[str, Any]) -> str:
    """A probe's prompt as a reader should see it: a reasoned probe's (a `cue`) with an
    ellipsis for the model's own recall, then the cue."""
    cue = probe.get("cue") or ""
    return f"{probe['prompt']} … {cue}" if cue else str(probe["prompt"])
