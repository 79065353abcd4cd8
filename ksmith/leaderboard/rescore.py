"""Judging one submission's rows for `verify`: a prediction string against the dataset's
answers (`judge`, and for cloze `_cloze_backed`), each row's flags recomputed (`rescore`), and the
declared aggregates against the recomputed ones (`compare_metrics`). The rules are in
`ksmith.leaderboard.verify`'s docstring; errors name the submission, the file and the field.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ksmith.errors import SpecError
from ksmith.leaderboard import checks
from ksmith.leaderboard.schema import PREDICTIONS_FILE, SUBMISSION_FILE, Cell

REL_TOL = 1e-9
ABS_TOL = 1e-12


class SubmissionError(SpecError):
    """A submission failed verification: names the submission, the file and the field."""

    def __init__(self, submission: str, message: str, *, file: str | Path, field: str | None):
        where = f"submission '{submission}' ({file})"
        if field:
            where += f": field '{field}'"
        SpecError.__init__(self, f"{where}: {message}")
        self.submission, self.file, self.field, self.message = submission, str(file), field, message


def _words(text: str) -> list[str]:
    from ksmith.evaluate.scoring import normalize_answer

    return normalize_answer(text).split()


def judge(probe: Mapping[str, Any], mode: str, prediction: str, answer: str) -> bool | None:
    """Does `prediction` give `answer`? None for cloze, which only the model can decide."""
    from ksmith.evaluate.scoring import contains_match, exact_match

    if mode == "mcq":
        return prediction == answer
    if mode == "gen_exact":
        return exact_match(prediction, answer)
    if mode == "gen_contains":
        return contains_match(prediction, answer)
    return None


_SEPARATE_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def _cloze_backed(prediction: str, answer: str) -> bool:
    """The prediction's leading words are the answer's. Punctuation separates words here: a
    model may run a sentence on without a space (a word-level tokenizer decodes "slime" "."
    "Prompt" as "slime.Prompt"), and the cloze prediction keeps whitespace-separated words.
    A token without a word-start marker is glued to the answer's last word too ("green"
    "Prompt" decodes as "greenPrompt"): the continuation then starts with the answer's text
    followed by anything but a lower-case letter ("furry" does not back "fur")."""
    want = _words(answer)
    got = _words(prediction.translate(_SEPARATE_PUNCT))
    if bool(want) and got[: len(want)] == want:
        return True
    text, ans = prediction.lstrip(), answer.strip()
    rest = text[len(ans) : len(ans) + 1]
    return bool(ans) and text.startswith(ans) and (not rest or not rest.islower())


class _Ctx:
    def __init__(self, sid: str, folder: Path):
        self.sid, self.folder = sid, folder

    def fail(self, message: str, field: str | None, file: str = SUBMISSION_FILE) -> SubmissionError:
        return SubmissionError(self.sid, message, file=self.folder / file, field=field)

    def pfail(self, message: str, field: str) -> SubmissionError:
        return self.fail(message, field, PREDICTIONS_FILE)


def rescore(
    ctx: _Ctx, config: str, probes: Sequence[Mapping[str, Any]], rows: Sequence[Mapping]
) -> list[dict[str, Any]]:
    """The rows with `match_*`, `correct` and `changed` recomputed; a declared flag that
    disagrees with the recomputation is an error naming the probe."""
    from ksmith.evaluate.scoring import MODES_BY_FORMAT, correct_after

    by_id = {p["id"]: p for p in probes}
    seen: set[tuple[str, str, str]] = set()
    before_pred: dict[tuple[str, str], str] = {}
    for r in rows:
        where = f"{config} {r['probe_id']} {r['stage']} {r['mode']}"
        p = by_id.get(r["probe_id"])
        if p is None:
            raise ctx.pfail(f"{where}: not a probe of config {config}", "probe_id")
        if int(r["group"]) != int(p["group"]):
            raise ctx.pfail(f"{where}: group {r['group']}, the dataset says {p['group']}", "group")
        if r["mode"] not in MODES_BY_FORMAT[p["format"]]:
            raise ctx.pfail(f"{where}: mode not used for {p['format']} probes", "mode")
        key = (r["probe_id"], r["stage"], r["mode"])
        if key in seen:
            raise ctx.pfail(f"{where}: appears twice", "probe_id")
        seen.add(key)
        if r["stage"] == "before":
            before_pred[(r["probe_id"], r["mode"])] = r["prediction"]

    out = []
    for r in rows:
        p = by_id[r["probe_id"]]
        mode, stage, pred = r["mode"], r["stage"], r["prediction"]
        where = f"{config} {r['probe_id']} {stage} {mode}"
        bad = checks.score_error(mode, float(r["score"]))
        if bad is not None:
            raise ctx.pfail(f"{where}: {bad}", "score")
        if mode == "mcq" and pred not in list(p["options"]):
            raise ctx.pfail(f"{where}: {pred!r} is not one of the options", "prediction")
        m_b = judge(p, mode, pred, p["answer_before"])
        m_a = judge(p, mode, pred, p["answer_after"])
        if mode == "cloze":  # the model decided; check what the row itself can show
            m_b, m_a = bool(r["match_before"]), bool(r["match_after"])
            own = m_b if stage == "before" else m_a
            if own != (float(r["score"]) >= 1.0):
                raise ctx.pfail(f"{where}: match flag disagrees with score {r['score']}", "score")
            for flag, answer in (
                ("match_before", p["answer_before"]),
                ("match_after", p["answer_after"]),
            ):
                if r[flag] and not _cloze_backed(pred, answer):
                    raise ctx.pfail(f"{where}: {pred!r} does not start with {answer!r}", flag)
        elif mode.startswith("gen_"):
            own = m_b if stage == "before" else m_a
            if float(r["score"]) != float(own):
                raise ctx.pfail(f"{where}: declared {r['score']}, recomputed {float(own)}", "score")
        if stage == "before":
            correct, changed = bool(m_b), False
        else:
            prev = before_pred.get((r["probe_id"], mode))
            if prev is None:
                raise ctx.pfail(f"{where}: no before-stage prediction", "stage")
            correct, changed = correct_after(bool(m_a), p["expect_after"]), pred != prev
        fresh = {
            "match_before": bool(m_b),
            "match_after": bool(m_a),
            "correct": correct,
            "changed": changed,
        }
        for col, value in fresh.items():
            if bool(r[col]) != value:
                raise ctx.pfail(f"{where}: declared {bool(r[col])}, recomputed {value}", col)
        out.append({**r, **fresh})
    return out


def _close(a: float | None, b: float | None) -> bool:
    """Equal up to float noise; null and NaN are the same (metrics.json has no NaN)."""
    a = None if a is None or math.isnan(a) else a
    b = None if b is None or math.isnan(b) else b
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def compare_metrics(
    ctx: _Ctx, i: int, cell: Cell, recomputed: Mapping[str, Mapping[str, Any]]
) -> None:
    """Declared aggregates must equal the recomputed ones, name by name and field by field."""
    from ksmith.evaluate.metrics import METRICS

    for name, fresh in recomputed.items():
        field = f"cells[{i}].metrics.{name}"
        got = cell.metrics.get(name)
        if got is None:
            raise ctx.fail(f"missing; recomputed value {fresh['value']}", field)
        if not _close(got.value, fresh["value"]):
            raise ctx.fail(f"declared {got.value}, recomputed {fresh['value']}", field + ".value")
        lo, hi = fresh["ci"]
        if not (_close(got.ci[0], lo) and _close(got.ci[1], hi)):
            raise ctx.fail(f"declared {list(got.ci)}, recomputed {[lo, hi]}", field + ".ci")
        if got.n != fresh["n"]:
            raise ctx.fail(f"declared {got.n}, recomputed {fresh['n']}", field + ".n")
        if got.mode != fresh["mode"]:
            raise ctx.fail(f"declared {got.mode!r}, recomputed {fresh['mode']!r}", field + ".mode")
    for name, got in cell.metrics.items():
        field = f"cells[{i}].metrics.{name}"
        base = name.partition("@")[0].partition(".")[0]
        for part, value in (("value", got.value), ("ci", got.ci[0]), ("ci", got.ci[1])):
            bad = checks.metric_value_error(base, value)
            if bad is not None:
                raise ctx.fail(bad, f"{field}.{part}")
        if name in recomputed:
            continue
        if base not in METRICS:
            raise ctx.fail(f"unknown metric '{base}'; known: {', '.join(METRICS.names())}", field)
        if METRICS.meta(base).get("source", "predictions") == "predictions":
            raise ctx.fail("not produced by recomputing this cell from its predictions", field)
