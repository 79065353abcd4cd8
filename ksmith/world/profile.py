"""The world model's capability profile: what the instrument can measure, before any update.

Measured on the dataset's profile configs (`<domain>.profile.<level>`, `ksmith.data.generate`
`profile_rows`): a seeded sample of the whole world, probed in every type and format and scored
exactly as evaluation scores (`ksmith.evaluate.scoring.judge_probes`).

- **accuracy**: per probe type (multi_hop also per hop count, ``multi_hop.h<k>``) and scoring
  mode (mcq, cloze, gen_exact, gen_contains), the share of probes answered as the world is.
- **in_context**: the direct and paraphrase probes with the request's counterfactual fact stated
  before them in in-context editing's format (`ksmith.render.text.IN_CONTEXT`, the ICE method's
  default): the share answered as the context says (answer_after).
- **fluency**: mean weighted n-gram entropy (`ksmith.evaluate.quality.ngram_entropy`, the
  fluency metric) of greedy continuations of direct cloze prompts, next to the same measure of
  the corpus's own descriptions cut to the same number of tokens; ``ratio`` = model / corpus.

`summary` reduces a profile to one number per ability, the least over the scored formats a
probe type has (cloze and mcq; qa is reported, not required); `shortfalls` compares that with
declared thresholds.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ksmith.evaluate.backend import Backend
from ksmith.evaluate.quality import ngram_entropy, words
from ksmith.evaluate.scoring import judge_probes
from ksmith.render.text import IN_CONTEXT

PROFILE_TYPES: tuple[str, ...] = (
    "direct",
    "paraphrase",
    "paraphrase_unseen",
    "reverse",
    "multi_hop",
    "comparison",
    "negation",
    "contextual",
)
SCORED_MODES: tuple[str, ...] = ("cloze", "mcq")  # what `summary` requires; qa is reported
IN_CONTEXT_TYPES: tuple[str, ...] = ("direct", "paraphrase")


def in_context_prefixes(requests: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """request_id -> the prefix stating its new fact, as in-context editing states it."""
    return {
        r["request_id"]: IN_CONTEXT.format(facts=f"{r['prompt']} {r['new_object']}")
        for r in requests
        if r.get("new_object")
    }


def _accuracy(probes, judgements, field: str) -> tuple[dict, dict]:
    """(type -> mode -> share of `field` true, type -> mode -> count)."""
    by_id = {p["id"]: p for p in probes}
    hits: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for j in judgements:
        p = by_id[j["probe_id"]]
        keys = [p["type"]]
        if p["type"] == "multi_hop":
            keys.append(f"multi_hop.h{int(p['hops'])}")
        for k in keys:
            hits[k][j["mode"]].append(int(bool(j[field])))
    acc = {
        t: {m: round(sum(v) / len(v), 4) for m, v in sorted(ms.items())} for t, ms in hits.items()
    }
    n = {t: {m: len(v) for m, v in sorted(ms.items())} for t, ms in hits.items()}
    order = {t: i for i, t in enumerate(PROFILE_TYPES)}
    key = lambda t: (order.get(t.split(".")[0], len(order)), t)  # noqa: E731
    return {t: acc[t] for t in sorted(acc, key=key)}, {t: n[t] for t in sorted(n, key=key)}


# Prompts (and corpus descriptions) the fluency ratio is measured on. A continuation's n-gram
# entropy varies a lot from prompt to prompt (sd 0.50 on the default world model, against a
# mean of 4.16): with 64 on each side, resamples of one model's ratio spread from 0.880 to 0.922
# (5th to 95th percentile, 2026-12-03), wider than the gap to its threshold.
FLUENCY_PROMPTS = 256


def corpus_fluency(descriptions: Sequence[str], tokens: int, n: int, seed: int) -> float | None:
    """Mean n-gram entropy of `n` seeded corpus descriptions, each cut to `tokens` tokens."""
    if not descriptions:
        return None
    rng = random.Random(seed)
    picked = rng.sample(list(descriptions), min(n, len(descriptions)))
    cut = [" ".join(words(t)[:tokens]) for t in picked]
    return sum(ngram_entropy(t) for t in cut) / len(cut)


def capability_profile(
    backend: Backend,
    probes: Sequence[Mapping[str, Any]],
    requests: Sequence[Mapping[str, Any]],
    descriptions: Sequence[str],
    *,
    fluency_prompts: int = FLUENCY_PROMPTS,
    fluency_tokens: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """The profile (module docstring) of the model behind `backend` on profile probes and their
    requests; `descriptions` are the corpus's description lines (the fluency reference)."""
    probes = sorted(probes, key=lambda p: str(p["id"]))
    judged = judge_probes(backend, probes, desc="profile")
    accuracy, counts = _accuracy(probes, judged, "match_before")
    ic_probes = [p for p in probes if p["type"] in IN_CONTEXT_TYPES and p["qset"] == "Q+"]
    prefixes = in_context_prefixes(requests)
    ic_probes = [p for p in ic_probes if p["request_id"] in prefixes]
    in_context, ic_counts = {}, {}
    if ic_probes:
        judged_ic = judge_probes(backend, ic_probes, prefixes=prefixes, desc="in-context")
        acc, n = _accuracy(ic_probes, judged_ic, "match_after")
        for t in acc:  # pooled over the in-context types, per mode
            for m, v in acc[t].items():
                in_context.setdefault(m, []).append((v, n[t][m]))
        in_context = {m: round(sum(v * k for v, k in vs) / sum(k for _, k in vs), 4)
                      for m, vs in sorted(in_context.items())}  # fmt: skip
        ic_counts = {m: sum(n[t].get(m, 0) for t in n) for m in in_context}
    prompts = list(dict.fromkeys(
        p["prompt"] for p in probes if p["type"] == "direct" and p["format"] == "cloze"
    ))  # fmt: skip
    prompts = random.Random(seed).sample(prompts, min(fluency_prompts, len(prompts)))
    fluency: dict[str, Any] = {"prompts": len(prompts), "tokens": fluency_tokens}
    if prompts:
        texts = backend.generate(prompts, max_new_tokens=fluency_tokens, stop=())
        model = sum(ngram_entropy(t) for t in texts) / len(texts)
        ref = corpus_fluency(descriptions, fluency_tokens, fluency_prompts, seed)
        fluency |= {
            "model": round(model, 4),
            "corpus": None if ref is None else round(ref, 4),
            "ratio": None if not ref else round(model / ref, 4),
            "example": f"{prompts[0]} {texts[0].lstrip()}",
        }
    return {
        "accuracy": accuracy,
        "n": counts,
        "in_context": in_context,
        "in_context_n": ic_counts,
        "fluency": fluency,
    }


def summary(profile: Mapping[str, Any]) -> dict[str, float | None]:
    """One number per ability: per probe type the least accuracy over its scored formats
    (`SCORED_MODES`), ``in_context`` likewise, and ``fluency`` (model / corpus ratio)."""
    out: dict[str, float | None] = {}
    for t, modes in profile.get("accuracy", {}).items():
        scored = [v for m, v in modes.items() if m in SCORED_MODES]
        out[t] = min(scored) if scored else None
    ic = [v for m, v in profile.get("in_context", {}).items() if m in SCORED_MODES]
    out["in_context"] = min(ic) if ic else None
    out["fluency"] = profile.get("fluency", {}).get("ratio")
    return out


def shortfalls(abilities: Mapping[str, float | None], thresholds: Mapping[str, float]) -> list[str]:
    """One line per ability of `abilities` (a `summary`) below its threshold (fluency: the
    ratio); abilities that were not measured are not shortfalls."""
    out = []
    for name, need in thresholds.items():
        value = abilities.get(name)
        if value is not None and value < need:
            out.append(f"{name} {value:.3f} < {need:.3f}")
    return out


def load_profile_set(dataset_dir) -> tuple[list[dict], list[dict], list[str]]:
    """(probes, requests, corpus descriptions) of a dataset's profile configs; request ids are
    prefixed with their config (``<config>/g0.r3``), since each config numbers its own."""
    from ksmith.data import list_profile_configs, load_probes, load_requests
    from ksmith.data.card import corpus_path
    from ksmith.data.parquet import read_rows

    probes: list[dict] = []
    requests: list[dict] = []
    for config in list_profile_configs(dataset_dir):
        for rows, out in ((load_probes(dataset_dir, config), probes),
                          (load_requests(dataset_dir, config), requests)):  # fmt: skip
            for row in rows:
                row["request_id"] = f"{config}/{row['request_id']}"
                if "id" in row:
                    row["id"] = f"{config}/{row['id']}"
            out.extend(rows)
    corpus = read_rows(Path(dataset_dir) / corpus_path())
    descriptions = [r["text"] for r in corpus if r.get("kind") == "description"]
    return probes, requests, descriptions
