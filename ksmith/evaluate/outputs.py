"""The evaluation folder (docs/contracts.md section 6): predictions, metrics, record."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ksmith.errors import KsmithError
from ksmith.evaluate.cache import StageMeasures
from ksmith.evaluate.metrics import compute_metrics, headline
from ksmith.evaluate.quality import kl_divergence, linear_cka, ngram_entropy
from ksmith.evaluate.scoring import stage_rows
from ksmith.evaluate.stats import bootstrap_ci, summarize
from ksmith.io import write_json

if TYPE_CHECKING:
    from ksmith.evaluate.runner import EvalOptions

PREDICTIONS_SCHEMA = pa.schema(
    [
        ("probe_id", pa.string()),
        ("group", pa.int32()),
        ("stage", pa.string()),
        ("mode", pa.string()),
        ("prediction", pa.string()),
        ("score", pa.float64()),
        ("correct", pa.bool_()),
        ("changed", pa.bool_()),
        ("match_before", pa.bool_()),
        ("match_after", pa.bool_()),
    ]
)


def model_metrics(
    before: StageMeasures, after: StageMeasures, options: EvalOptions
) -> dict[str, dict[str, Any]]:
    """Fluency (after, and before as reference) and drift (KL, CKA) from raw measurements."""
    kw = {"seed": options.seed, "n_boot": options.n_boot}
    out = {
        "fluency@generation": summarize(
            "fluency@generation",
            [ngram_entropy(f["text"]) for f in after.fluency],
            "generation",
            **kw,
        ),
        "fluency.before@generation": summarize(
            "fluency.before@generation",
            [ngram_entropy(f["text"]) for f in before.fluency],
            "generation",
            **kw,
        ),
    }
    if before.drift_prompts != after.drift_prompts:
        raise KsmithError("drift prompts of the before and after stages differ")
    have = all(
        x is not None for x in (before.logprobs, after.logprobs, before.hidden, after.hidden)
    )
    kl = kl_divergence(before.logprobs, after.logprobs) if have else []
    out["drift_kl@next_token"] = summarize("drift_kl@next_token", kl, "next_token", **kw)
    cka: dict[str, Any] = {"value": None, "ci": [None, None], "n": 0, "mode": "hidden"}
    if have and len(before.drift_prompts) >= 2:
        x, y = before.hidden, after.hidden  # [n, hidden] each, rows paired by prompt
        value = linear_cka(x, y)
        lo, hi = bootstrap_ci(
            len(x), lambda idx: linear_cka(x[idx], y[idx]), name="drift_cka@hidden", **kw
        )
        cka = {
            "value": None if np.isnan(value) else value,
            "ci": [lo, hi] if np.isfinite([lo, hi]).all() else [None, None],
            "n": len(x),
            "mode": "hidden",
        }
    out["drift_cka@hidden"] = cka
    return out


def prediction_rows(
    probes: Sequence[Mapping[str, Any]], before: StageMeasures, after: StageMeasures
) -> list[dict[str, Any]]:
    return stage_rows(probes, before.judgements, "before") + stage_rows(
        probes, after.judgements, "after", before.judgements
    )


def write_outputs(
    folder: Path,
    probes: Sequence[Mapping[str, Any]],
    before: StageMeasures,
    after: StageMeasures,
    extra_metrics: Mapping[str, dict[str, Any]],
    record: Mapping[str, Any],
    options: EvalOptions,
) -> dict[str, Any]:
    """Write predictions.parquet, metrics.json and eval.json into `folder`; return metrics."""
    rows = prediction_rows(probes, before, after)
    pq.write_table(
        pa.Table.from_pylist(rows, schema=PREDICTIONS_SCHEMA), folder / "predictions.parquet"
    )
    metrics = compute_metrics(
        probes, rows, kind=record["kind"], seed=options.seed, n_boot=options.n_boot
    )
    metrics.update(extra_metrics)
    metrics = dict(sorted(metrics.items()))
    result = {
        "config": record["config"],
        "method": record["method"],
        "kind": record["kind"],
        "level": record["level"],
        "scale": record["scale"],
        "metrics": metrics,
        "headline": list(headline(metrics)),
    }
    write_json(folder / "metrics.json", _finite(result))
    write_json(
        folder / "eval.json",
        _finite(
            {
                **record,
                "versions": _versions(),
                "fluency_texts": {"before": before.fluency, "after": after.fluency},
            }
        ),
    )
    return result


def _finite(obj: Any) -> Any:
    """JSON has no NaN: non-finite floats become null."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    import ksmith

    out = {"ksmith": ksmith.__version__}
    for pkg in ("torch", "transformers", "lm_eval", "vllm"):
        try:
            out[pkg] = md.version(pkg.replace("_", "-"))
        except md.PackageNotFoundError:
            continue
    out["git_revision"] = _git_revision()
    return out


def _git_revision() -> str:
    import subprocess

    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def read_predictions(folder: str | Path) -> list[dict[str, Any]]:
    return pq.read_table(Path(folder) / "predictions.parquet").to_pylist()


def read_metrics(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "metrics.json").read_text())
