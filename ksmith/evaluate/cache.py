"""The "before" cache: what the un-updated model says, computed once per
(model fingerprint, dataset fingerprint, config, backend, measurement options).

Every method x seed cell of a sweep shares the same before stage, so it is scored once and
reused. An entry is a folder written atomically (`ksmith.io.atomic_output_dir`):
``judgements.parquet`` (one row per probe and mode), ``extra.json`` (fluency texts, drift
prompts) and, when the backend measures drift, ``drift.npz`` (next-token log-probabilities and
hidden states on the drift prompts).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ksmith.io import atomic_output_dir

log = logging.getLogger(__name__)

CACHE_VERSION = "1"
JUDGEMENT_SCHEMA = pa.schema(
    [
        ("probe_id", pa.string()),
        ("group", pa.int32()),
        ("mode", pa.string()),
        ("prediction", pa.string()),
        ("score_before", pa.float64()),
        ("score_after", pa.float64()),
        ("match_before", pa.bool_()),
        ("match_after", pa.bool_()),
    ]
)


def default_cache_dir() -> Path:
    """`ksmith.io.cache_dir("before")`: $KSMITH_CACHE/before, else ~/.cache/ksmith/before."""
    from ksmith.io import cache_dir

    return cache_dir("before")


def cache_key(**parts: Any) -> str:
    """Hex sha256 of the canonical JSON of the key parts (plus the cache format version)."""
    blob = json.dumps({"cache_version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class StageMeasures:
    """One stage's raw measurements on one model (or on one group's updated models).

    `drift_prompts` are ``(group, prompt)`` rows; `logprobs` ``[n, vocab]`` and `hidden`
    ``[n, hidden]`` follow their order (None when the backend cannot measure drift).
    """

    judgements: list[dict[str, Any]]
    fluency: list[dict[str, Any]] = field(default_factory=list)  # {group, prompt, text}
    drift_prompts: list[tuple[int, str]] = field(default_factory=list)
    logprobs: np.ndarray | None = None
    hidden: np.ndarray | None = None


def load_before(cache_dir: Path, key: str) -> StageMeasures | None:
    """The cached before stage for `key`, or None (missing or unreadable: recomputed)."""
    entry = Path(cache_dir) / key
    try:
        judgements = pq.read_table(entry / "judgements.parquet").to_pylist()
        extra = json.loads((entry / "extra.json").read_text())
        logprobs = hidden = None
        if extra["has_drift"]:
            with np.load(entry / "drift.npz") as z:
                logprobs, hidden = z["logprobs"], z["hidden"]
    except (OSError, KeyError, ValueError, pa.ArrowException) as e:
        if entry.exists():
            log.warning("before cache %s unreadable (%s); recomputing", entry, e)
        return None
    return StageMeasures(
        judgements=judgements,
        fluency=extra["fluency"],
        drift_prompts=[(int(g), str(p)) for g, p in extra["drift_prompts"]],
        logprobs=logprobs,
        hidden=hidden,
    )


def save_before(cache_dir: Path, key: str, measures: StageMeasures) -> None:
    """Write the before stage atomically (a killed run leaves no half entry).

    Entries are content-addressed, so when processes evaluating side by side race to write the
    same key, the first complete entry stands and the others are dropped.
    """
    entry = Path(cache_dir) / key
    try:
        _write_before(entry, measures)
    except OSError:
        if load_before(cache_dir, key) is None:
            raise
        log.debug("before cache %s was written by another process", entry)


def _write_before(entry: Path, measures: StageMeasures) -> None:
    with atomic_output_dir(entry, kind="before-cache") as tmp:
        table = pa.Table.from_pylist(measures.judgements, schema=JUDGEMENT_SCHEMA)
        pq.write_table(table, tmp / "judgements.parquet")
        has_drift = measures.logprobs is not None and measures.hidden is not None
        extra = {
            "fluency": measures.fluency,
            "drift_prompts": [list(x) for x in measures.drift_prompts],
            "has_drift": has_drift,
        }
        (tmp / "extra.json").write_text(json.dumps(extra, sort_keys=True) + "\n")
        if has_drift:
            np.savez_compressed(
                tmp / "drift.npz", logprobs=measures.logprobs, hidden=measures.hidden
            )
