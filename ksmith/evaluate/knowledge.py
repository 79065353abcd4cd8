"""What the model knew before the update, and a warning when it barely knew anything.

Every update metric compares the model after the update with the model before. If, before the
update, the model does not know the targeted facts (its direct-probe accuracy on them is low),
those comparisons measure its ignorance: unlearning looks perfect when nothing is done (the
facts were never recallable), and an edit has no old answer to override. So the evaluation
measures the before-update accuracy on the direct probes (Q+: the requested facts, training
template) and, below `THRESHOLD`, logs a warning and records it in ``eval.json`` (``knowledge``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

THRESHOLD = 0.5


def prior_knowledge(
    probes: Sequence[Mapping[str, Any]],
    before: Sequence[Mapping[str, Any]],
    *,
    config: str = "",
    threshold: float = THRESHOLD,
) -> dict[str, Any]:
    """``{direct_accuracy_before, n, threshold, warning}`` from the before-stage judgements
    (one per probe and scoring mode); `warning` is None when the model knows enough."""
    types = {p["id"]: p["type"] for p in probes}
    hits = [bool(j["match_before"]) for j in before if types.get(j["probe_id"]) == "direct"]
    acc = sum(hits) / len(hits) if hits else None
    warning = None
    if acc is not None and acc < threshold:
        warning = (
            f"{config + ': ' if config else ''}before the update the model answers only "
            f"{acc:.0%} of the direct probes of the targeted facts correctly ({len(hits)} "
            f"judgements; threshold {threshold:.0%}): it barely knows this world, so doing "
            "nothing already looks like perfect unlearning and an edit has no old answer to "
            "override. Train or fine-tune the model on the world's corpus first "
            "(params.yaml model.finetune) before reading these metrics."
        )
        log.warning("%s", warning)
    return {"direct_accuracy_before": acc, "n": len(hits), "threshold": threshold,
            "warning": warning}  # fmt: skip
