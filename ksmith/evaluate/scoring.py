"""Probe scoring: probe rows -> backend calls -> judgements -> prediction rows.

Scoring conventions (docs/contracts.md, section 3):

- ``mcq``: the option with the highest log p(" " + option | prompt) is the prediction;
  score = log-likelihood of the expected option.
- ``cloze``: teacher-forced token accuracy of " " + answer; correct when it is 1.0 (every answer
  token is the greedy choice). The prediction is the greedy continuation cut to as many words as
  the longer of the two expected answers, so "did the answer change" compares answer spans only.
- ``qa``: greedy generation stopped at "\\n"; two modes, ``gen_exact`` (normalized exact match)
  and ``gen_contains`` (the normalized answer occurs as a word span of the normalized output).
- a probe with a ``cue`` (reasoned: negation, comparison) is scored in its format after the
  model's own greedy recall and the cue (`reasoned_prompts`).

Every probe is judged against BOTH expected answers in each stage (``match_before``,
``match_after``): that is what makes "which world is this answer in" decidable for conflict
pairs and residual retention. A stage's ``correct`` then follows from its expected answer:
before -> ``match_before``; after -> ``match_after``, negated when ``expect_after == "avoid"``
(unlearning: the old answer must no longer come).
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from ksmith.errors import KsmithError
from ksmith.evaluate.backend import Backend

MODES_BY_FORMAT: dict[str, tuple[str, ...]] = {
    "mcq": ("mcq",),
    "cloze": ("cloze",),
    "qa": ("gen_exact", "gen_contains"),
}
PRIMARY_MODE: dict[str, str] = {"mcq": "mcq", "cloze": "cloze", "qa": "gen_exact"}
MODES: tuple[str, ...] = ("mcq", "cloze", "gen_exact", "gen_contains")
# New tokens a reasoned probe's recall may take before its cue is written for it: the longest
# recall of the default worlds (one statement per value of a multi-valued fact) fits.
REASON_TOKENS = 64

# Columns of predictions.parquet: the contract's, then the two world-membership flags.
PREDICTION_COLUMNS: tuple[str, ...] = (
    "probe_id",
    "group",
    "stage",
    "mode",
    "prediction",
    "score",
    "correct",
    "changed",
    "match_before",
    "match_after",
)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the SQuAD normalization)."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answer: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(answer)


def contains_match(prediction: str, answer: str) -> bool:
    """The normalized answer occurs in the normalized prediction as a whole-word span."""
    ans = normalize_answer(answer)
    return bool(ans) and f" {ans} " in f" {normalize_answer(prediction)} "


def generation_budget(answers: Sequence[str], margin: int = 4) -> int:
    """New tokens to generate for an answer: its character count bounds its BPE token count
    (every token covers at least one character), plus a margin; rounded up to 8 so prompts
    batch together."""
    longest = max((len(a) for a in answers), default=0) + 1  # the leading space
    return int(math.ceil((longest + margin) / 8) * 8)


def with_prefix(prompt: str, prefix: str) -> str:
    """Prepend an in-context-editing prefix, separated by one space unless it ends in one."""
    if not prefix:
        return prompt
    return prefix + prompt if prefix[-1].isspace() else f"{prefix} {prompt}"


def _first_words(text: str, n: int) -> str:
    return " ".join(text.split()[:n])


def _word_count(*answers: str) -> int:
    return max(1, *(len(a.split()) for a in answers))


def judge_probes(
    backend: Backend,
    probes: Sequence[Mapping[str, Any]],
    *,
    prefixes: Mapping[str, str] | None = None,
    chunk_size: int = 64,
    desc: str = "probes",
    scored: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Score `probes` with `backend`: one judgement per (probe, mode).

    A judgement holds ``probe_id, group, mode, prediction, score_before, score_after,
    match_before, match_after`` (scores and matches against answer_before / answer_after).
    `prefixes` maps request_id -> text prepended to that request's prompts. A probe with a
    ``cue`` is scored after the model's own recall (`reasoned_prompts`). `scored`, when
    given, are those prompts already computed (`scored_prompts` on the same backend).
    """
    prompts = (
        list(scored)
        if scored is not None
        else scored_prompts(backend, probes, prefixes, chunk_size=chunk_size, desc=desc)
    )
    if len(prompts) != len(probes):
        raise KsmithError(f"{len(prompts)} scored prompts for {len(probes)} probes")
    out: list[dict[str, Any]] = []
    with tqdm(total=len(probes), desc=desc, unit="probe", leave=False) as bar:
        for start in range(0, len(probes), chunk_size):
            chunk = probes[start : start + chunk_size]
            out.extend(_judge_chunk(backend, chunk, prompts[start : start + chunk_size]))
            bar.update(len(chunk))
    return out


def scored_prompts(
    backend: Backend,
    probes: Sequence[Mapping[str, Any]],
    prefixes: Mapping[str, str] | None = None,
    *,
    chunk_size: int = 64,
    desc: str = "probes",
) -> list[str]:
    """The prompt each probe's answer is scored after: its request's prefix (in-context
    editing) and its prompt, then, for a reasoned probe, the model's recall and the cue."""
    prefixes = prefixes or {}
    prompts = [with_prefix(p["prompt"], prefixes.get(p["request_id"], "")) for p in probes]
    cues = [p.get("cue") or "" for p in probes]
    return reasoned_prompts(backend, prompts, cues, chunk_size=chunk_size, desc=desc)


def reasoned_prompts(
    backend: Backend,
    prompts: Sequence[str],
    cues: Sequence[str],
    *,
    chunk_size: int = 64,
    desc: str = "probes",
) -> list[str]:
    """Each prompt with a cue (reasoned probes: negation and comparison) extended by the
    model's own chain of thought: its greedy continuation up to the cue (or a newline, or
    `REASON_TOKENS` new tokens; at most half the window of a backend with a `max_length`) with its whitespace as the corpus writes it (one space between
    words, whatever the tokenizer's decoding), then `` " " + cue``; prompts without a cue
    unchanged.

    Allen-Zhu & Li, "Physics of Language Models: Part 3.2, Knowledge Manipulation" (arXiv
    2309.14402, section 4-5): classification and comparison of stored facts are learned and
    answered only when the model first writes those facts out, in training and at inference.
    The world model's corpus writes the recall of the facts asked before the cue
    (`ksmith.render.corpus`); the answer is then scored after what *this* model recalls, so an
    update that changed a fact changes the recall and, through it, the answer. The cue is
    written whether or not the model wrote it, so the answer is always asked for."""
    if len(cues) != len(prompts):
        raise KsmithError(f"{len(cues)} cues for {len(prompts)} prompts")
    todo = sorted({(c, p) for p, c in zip(prompts, cues, strict=True) if c})
    if not todo:
        return list(prompts)
    # a model with a short window (a test's tiny one) keeps half of it for the prompt
    window = getattr(backend, "max_length", None)
    budget = REASON_TOKENS if not window else max(1, min(REASON_TOKENS, int(window) // 2))
    done: dict[tuple[str, str], str] = {}
    with tqdm(total=len(todo), desc=f"{desc}: recall", unit="prompt", leave=False) as bar:
        for start in range(0, len(todo), chunk_size):
            part = todo[start : start + chunk_size]
            for cue in sorted({c for c, _ in part}):
                asked = [p for c, p in part if c == cue]
                texts = backend.generate(asked, budget, stop=(cue, "\n"))
                for p, t in zip(asked, texts, strict=True):
                    written = " ".join(t.split())  # single spaces, as corpus lines are written
                    done[(cue, p)] = f"{p} {written} {cue}" if written else f"{p} {cue}"
            bar.update(len(part))
    return [done[(c, p)] if c else p for p, c in zip(prompts, cues, strict=True)]


def _judge_chunk(
    backend: Backend, probes: Sequence[Mapping[str, Any]], prompts: Sequence[str]
) -> list[dict[str, Any]]:
    ll_req: list[tuple[str, str]] = []  # mcq: (prompt, " " + option)
    acc_req: dict[tuple[str, str], int] = {}  # cloze: (prompt, " " + answer) -> index
    gen_req: dict[int, list[int]] = {}  # budget -> probe indices to generate for
    gen_words: dict[int, int | None] = {}  # probe index -> words kept (cloze); None: all
    for i, (p, prompt) in enumerate(zip(probes, prompts, strict=True)):
        fmt = p["format"]
        if fmt not in MODES_BY_FORMAT:
            raise KsmithError(
                f"probe {p['id']}: field 'format' is {fmt!r}; expected one of mcq, cloze, qa"
            )
        if fmt == "mcq":
            if len(p["options"]) == 0:
                raise KsmithError(f"probe {p['id']}: mcq probe with no options")
            ll_req.extend((prompt, " " + o) for o in p["options"])
            continue
        if fmt == "cloze":
            for ans in (p["answer_before"], p["answer_after"]):
                acc_req.setdefault((prompt, " " + ans), len(acc_req))
        budget = generation_budget([p["answer_before"], p["answer_after"]])
        gen_req.setdefault(budget, []).append(i)
        keep = _word_count(p["answer_before"], p["answer_after"]) if fmt == "cloze" else None
        gen_words[i] = keep

    lls = backend.loglikelihood(ll_req) if ll_req else []
    accs = backend.token_accuracy(list(acc_req)) if acc_req else []
    generated: dict[int, str] = {}
    for budget, idx in gen_req.items():
        texts = backend.generate_words(
            [prompts[i] for i in idx], budget, [gen_words[i] for i in idx], stop=("\n",)
        )
        generated.update(zip(idx, texts, strict=True))

    out: list[dict[str, Any]] = []
    ll_pos = 0
    for i, (p, prompt) in enumerate(zip(probes, prompts, strict=True)):
        a_b, a_a = p["answer_before"], p["answer_after"]
        base = {"probe_id": p["id"], "group": int(p["group"])}
        if p["format"] == "mcq":
            options = list(p["options"])
            scores = lls[ll_pos : ll_pos + len(options)]
            ll_pos += len(options)
            best = max(range(len(options)), key=lambda j: scores[j])  # ties: first option
            pred = options[best]
            by_option = dict(zip(options, scores, strict=True))
            out.append(
                base
                | {
                    "mode": "mcq",
                    "prediction": pred,
                    "score_before": float(by_option.get(a_b, math.nan)),
                    "score_after": float(by_option.get(a_a, math.nan)),
                    "match_before": pred == a_b,
                    "match_after": pred == a_a,
                }
            )
        elif p["format"] == "cloze":
            acc_b = float(accs[acc_req[(prompt, " " + a_b)]])
            acc_a = float(accs[acc_req[(prompt, " " + a_a)]])
            out.append(
                base
                | {
                    "mode": "cloze",
                    "prediction": _first_words(generated[i], _word_count(a_b, a_a)),
                    "score_before": acc_b,
                    "score_after": acc_a,
                    "match_before": acc_b >= 1.0,
                    "match_after": acc_a >= 1.0,
                }
            )
        else:
            text = generated[i].strip()
            for mode, match in (("gen_exact", exact_match), ("gen_contains", contains_match)):
                m_b, m_a = match(text, a_b), match(text, a_a)
                out.append(
                    base
                    | {
                        "mode": mode,
                        "prediction": text,
                        "score_before": float(m_b),
                        "score_after": float(m_a),
                        "match_before": m_b,
                        "match_after": m_a,
                    }
                )
    return out


def correct_after(match_after: bool, expect_after: str) -> bool:
    """Correctness in the after stage: produce answer_after, or (``avoid``) do not."""
    if expect_after == "avoid":
        return not match_after
    if expect_after != "match":
        raise KsmithError(f"field 'expect_after' is {expect_after!r}; expected match or avoid")
    return match_after


def stage_rows(
    probes: Sequence[Mapping[str, Any]],
    judgements: Sequence[Mapping[str, Any]],
    stage: str,
    before: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Prediction rows (PREDICTION_COLUMNS) of one stage from its judgements.

    For ``after``, `before` (the before-stage judgements) decides ``changed``.
    """
    by_id = {p["id"]: p for p in probes}
    prev = {(j["probe_id"], j["mode"]): j["prediction"] for j in before or ()}
    rows = []
    for j in judgements:
        p = by_id[j["probe_id"]]
        if stage == "before":
            score, correct, changed = j["score_before"], j["match_before"], False
        elif stage == "after":
            key = (j["probe_id"], j["mode"])
            if key not in prev:
                raise KsmithError(f"probe {key[0]} ({key[1]}): no before-stage prediction")
            score = j["score_after"]
            correct = correct_after(bool(j["match_after"]), p["expect_after"])
            changed = j["prediction"] != prev[key]
        else:
            raise ValueError(stage)
        rows.append(
            {
                "probe_id": j["probe_id"],
                "group": int(j["group"]),
                "stage": stage,
                "mode": j["mode"],
                "prediction": j["prediction"],
                "score": float(score),
                "correct": bool(correct),
                "changed": bool(changed),
                "match_before": bool(j["match_before"]),
                "match_after": bool(j["match_after"]),
            }
        )
    return rows
