"""Evaluation: backends, probe scoring, metrics, lm-eval bridge.

Light on import: torch, lm-eval and vLLM load only inside the functions that need them.
"""

from ksmith.evaluate.backend import BACKENDS, Backend
from ksmith.evaluate.metrics import (
    HEADLINE,
    METRICS,
    compute_metrics,
    headline,
    metric,
    metric_info,
    parse_metric_name,
)
from ksmith.evaluate.quality import kl_divergence, linear_cka, ngram_entropy
from ksmith.evaluate.runner import EvalOptions, evaluate
from ksmith.evaluate.scoring import judge_probes, normalize_answer, stage_rows

__all__ = [
    "BACKENDS",
    "HEADLINE",
    "METRICS",
    "Backend",
    "EvalOptions",
    "compute_metrics",
    "evaluate",
    "headline",
    "judge_probes",
    "kl_divergence",
    "linear_cka",
    "metric",
    "metric_info",
    "ngram_entropy",
    "normalize_answer",
    "parse_metric_name",
    "stage_rows",
]
