"""One stage's measurements on one model: probe judgements, fluency texts, drift arrays.

Fluency prompts are the prompts of direct Q+ cloze probes (statement openings, which the world
model continues as it continues its corpus's descriptions; a question is answered in a word and
an mcq stem lists options), drift prompts those of Q- probes; both are taken
per group in probe-id order, so the before and after stages see the same prompts. In the
after stage a prompt gets its request's in-context prefix, like every probe of that request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ksmith.evaluate.backend import Backend
from ksmith.evaluate.cache import StageMeasures
from ksmith.evaluate.scoring import judge_probes, with_prefix

if TYPE_CHECKING:
    from ksmith.evaluate.runner import EvalOptions

Selection = list[tuple[int, str, str]]  # (group, request_id, prompt)


def _select(probes: Sequence[Mapping[str, Any]], n: int, keep) -> Selection:
    seen: dict[int, list[tuple[int, str, str]]] = {}
    for p in sorted(probes, key=lambda p: (int(p["group"]), p["id"])):
        g = int(p["group"])
        rows = seen.setdefault(g, [])
        if keep(p) and len(rows) < n and all(r[2] != p["prompt"] for r in rows):
            rows.append((g, p["request_id"], p["prompt"]))
    return [r for g in sorted(seen) for r in seen[g]]


def fluency_selection(probes: Sequence[Mapping[str, Any]], n: int) -> Selection:
    return _select(
        probes, n, lambda p: p["type"] == "direct" and p["qset"] == "Q+" and p["format"] == "cloze"
    )


def drift_selection(probes: Sequence[Mapping[str, Any]], n: int) -> Selection:
    return _select(probes, n, lambda p: p["qset"] == "Q-")


def drift_available(backend: Backend) -> bool:
    """True when the backend offers ``next_token_logprobs`` and ``hidden_states`` (hf)."""
    return callable(getattr(backend, "next_token_logprobs", None)) and callable(
        getattr(backend, "hidden_states", None)
    )


def _as_numpy(x: Any) -> np.ndarray:
    x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    return x.astype(np.float32)


def _measure(
    backend: Backend,
    probes: Sequence[Mapping[str, Any]],
    prefixes: Mapping[str, str],
    options: EvalOptions,
    desc: str,
) -> StageMeasures:
    judgements = judge_probes(
        backend, probes, prefixes=prefixes, chunk_size=options.chunk_size, desc=desc
    )
    fluency: list[dict[str, Any]] = []
    sel = fluency_selection(probes, options.fluency_prompts)
    if sel:
        texts = backend.generate(
            [with_prefix(p, prefixes.get(r, "")) for _, r, p in sel],
            max_new_tokens=options.fluency_tokens,
            stop=(),
        )
        fluency = [
            {"group": g, "prompt": p, "text": t} for (g, _, p), t in zip(sel, texts, strict=True)
        ]
    drift = drift_selection(probes, options.drift_prompts)
    logprobs = hidden = None
    if drift and drift_available(backend):
        inputs = [with_prefix(p, prefixes.get(r, "")) for _, r, p in drift]
        logprobs = _as_numpy(backend.next_token_logprobs(inputs))  # [n, vocab]
        hidden = _as_numpy(backend.hidden_states(inputs, options.hidden_layer))  # [n, hidden]
    return StageMeasures(
        judgements=judgements,
        fluency=fluency,
        drift_prompts=[(g, p) for g, _, p in drift],
        logprobs=logprobs,
        hidden=hidden,
    )


def measure_before(
    backend: Backend, probes: Sequence[Mapping[str, Any]], options: EvalOptions
) -> StageMeasures:
    """All groups' probes on the base model, no prefixes."""
    return _measure(backend, probes, {}, options, desc="before")


def measure_after_group(
    backend: Backend,
    probes: Sequence[Mapping[str, Any]],
    prefixes: Mapping[str, str],
    group: int,
    options: EvalOptions,
) -> StageMeasures:
    """One group's probes on that group's updated model, with its prefixes."""
    return _measure(backend, probes, prefixes, options, desc=f"after g{group}")


def merge_measures(parts: Sequence[StageMeasures]) -> StageMeasures:
    """Concatenate per-group measurements (in group order)."""
    has_drift = all(p.logprobs is not None for p in parts if p.drift_prompts)

    def cat(attr: str) -> np.ndarray | None:
        arrays = [getattr(p, attr) for p in parts if p.drift_prompts]
        return np.concatenate(arrays) if has_drift and arrays else None

    return StageMeasures(
        judgements=[j for p in parts for j in p.judgements],
        fluency=[f for p in parts for f in p.fluency],
        drift_prompts=[d for p in parts for d in p.drift_prompts],
        logprobs=cat("logprobs"),
        hidden=cat("hidden"),
    )
