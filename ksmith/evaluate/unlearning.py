"""The field's unlearning metrics, as their sources define them, on per-item token scores.

Every metric here is a pure function of per-item teacher-forced scores (`ItemScores`: the
log-probability and the argmax hit of each answer token, and the answer text), so an evaluator
stores those once per (item, model) and every number is recomputed from them (docs/unlearning.md
lists what to store). `score_items` computes them with a transformers causal LM, scoring
``prompt + " " + answer`` as evaluation does (docs/contracts.md, section 3); the scores are
`ksmith.evaluate.item_scores`, the choice of the facts scored `ksmith.evaluate.fact_items`.

Sources (read, not copied): TOFU (Maini et al. 2024, arXiv 2401.06121), MUSE (Shi et al. 2024,
arXiv 2407.06460) and open-unlearning (github.com/locuslab/open-unlearning, files named per
function below; Dorna et al. 2025, arXiv 2506.12618).

Conventions (open-unlearning's): an item's *loss* is its mean token negative log-likelihood
(``avg_loss``, `evaluate_probability` in src/evals/metrics/utils.py) and its *probability* is
``exp(-avg_loss)``, the length-normalised P(a|q)^(1/|a|) of TOFU section 2.5.1.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ksmith.errors import KsmithError

# Re-exported: the metrics' inputs lived here, and callers import them from this module.
from ksmith.evaluate.fact_items import FactItems, fact_items  # noqa: F401
from ksmith.evaluate.item_scores import ItemScores, score_items  # noqa: F401

EPS = 1e-10  # open-unlearning's guard against division by zero


# -- TOFU: truth ratio, forget quality, model utility ---------------------------------------


def truth_ratios(
    paraphrased: Sequence[Sequence[ItemScores]], perturbed: Sequence[Sequence[ItemScores]]
) -> np.ndarray:
    """Per item, TOFU's truth ratio R_truth = P(perturbed) / P(paraphrased) (TOFU section
    2.5.1: "the ratio of the probability of a perturbed, incorrect answer to the paraphrased
    correct one", each normalised by length).

    As open-unlearning computes it (`truth_ratio`, src/evals/metrics/memorization.py): per item
    the avg losses of its paraphrased answers are averaged, likewise its perturbed answers
    (`aggregate_to_1D`), and R = exp(-loss_perturbed) / (exp(-loss_paraphrased) + 1e-10); with
    several answers this is the ratio of geometric means (TOFU's paper writes the arithmetic
    mean of the perturbed answers' probabilities; the reference code is followed). In ksmith
    the perturbed answers are wrong objects of the same relation (the mcq distractors)."""
    if len(paraphrased) != len(perturbed):
        raise KsmithError(
            f"truth_ratios: {len(paraphrased)} items of paraphrased answers but "
            f"{len(perturbed)} of perturbed ones"
        )
    out = np.empty(len(paraphrased))
    for i, (good, bad) in enumerate(zip(paraphrased, perturbed, strict=True)):
        if not good or not bad:
            raise KsmithError(f"truth_ratios: item {i} has no paraphrased or no perturbed answer")
        correct = math.exp(-float(np.mean([s.avg_loss for s in good])))
        wrong = math.exp(-float(np.mean([s.avg_loss for s in bad])))
        out[i] = wrong / (correct + EPS)
    return out


def truth_ratio_score(ratios: Sequence[float], aggregator: str) -> float:
    """TOFU's aggregate of truth ratios (open-unlearning `truth_ratio` aggregators):
    ``closer_to_1_better`` (forget set: mean of min(R, 1/R)), ``true_better`` (retain side:
    mean of max(0, 1 - R)), ``prob_mean`` is not offered (it needs the probabilities)."""
    r = np.asarray(ratios, dtype=np.float64)
    if aggregator == "closer_to_1_better":
        return float(np.mean(np.minimum(r, 1 / (r + EPS))))
    if aggregator == "true_better":
        return float(np.mean(np.maximum(0.0, 1 - r)))
    raise KsmithError(
        f"truth ratio aggregator '{aggregator}': expected closer_to_1_better or true_better"
    )


def forget_quality(unlearned: Sequence[float], retain: Sequence[float]) -> float:
    """TOFU's forget quality: the p-value of the two-sample Kolmogorov-Smirnov test between the
    unlearned model's and the retain model's truth ratios on the forget set (TOFU section
    2.5.2; open-unlearning `ks_test`, src/evals/metrics/privacy.py, `scipy.stats.ks_2samp`).
    High (near 1) when the distributions are indistinguishable."""
    from scipy.stats import ks_2samp

    if len(unlearned) == 0 or len(retain) == 0:
        raise KsmithError("forget_quality: needs truth ratios of both models")
    return float(ks_2samp(np.asarray(unlearned), np.asarray(retain)).pvalue)


def model_utility(components: Mapping[str, float]) -> float:
    """TOFU's model utility: the harmonic mean of the retain-side measures (TOFU section
    2.5.2: probability, ROUGE and truth ratio on the retain set, real authors and world facts;
    open-unlearning `hm_aggregate`, src/evals/metrics/utility.py, `scipy.stats.hmean`). Any
    component at 0 makes it 0. ksmith's components: see docs/unlearning.md."""
    x = np.asarray(list(components.values()), dtype=np.float64)
    if len(x) == 0 or np.any(x < 0) or not np.all(np.isfinite(x)):
        raise KsmithError(
            f"model_utility: needs finite non-negative components, got {dict(components)}"
        )
    if np.any(x == 0):
        return 0.0
    return float(len(x) / np.sum(1 / x))


def probability(items: Sequence[ItemScores]) -> float:
    """Mean normalised probability of the correct answers (open-unlearning `probability`)."""
    return float(np.mean([s.prob for s in items]))


def probability_w_options(
    correct: Sequence[ItemScores], wrong: Sequence[Sequence[ItemScores]]
) -> float:
    """Mean over items of P(correct) / (P(correct) + sum P(wrong)), normalised probabilities
    (TOFU's probability on real authors and world facts; open-unlearning
    `probability_w_options`, src/evals/metrics/memorization.py)."""
    vals = [
        c.prob / (c.prob + sum(w.prob for w in ws) + EPS)
        for c, ws in zip(correct, wrong, strict=True)
    ]
    return float(np.mean(vals))


# -- MUSE: membership inference and PrivLeak ------------------------------------------------


def mia_loss(item: ItemScores) -> float:
    """LOSS attack score (Yeom et al. 2018): the avg loss (open-unlearning
    src/evals/metrics/mia/loss.py)."""
    return item.avg_loss


def mia_min_k(item: ItemScores, k: float = 0.4) -> float:
    """Min-k% Prob attack score (Shi et al. 2024, arXiv 2310.16789): minus the mean of the
    lowest k share of token log-probs, at least one token (open-unlearning
    src/evals/metrics/mia/min_k.py; MUSE's privleak uses k = 0.4)."""
    lp = np.sort(np.asarray(item.logprobs))
    return -float(np.mean(lp[: max(1, int(len(lp) * k))]))


def mia_zlib(item: ItemScores) -> float:
    """zlib attack score (Carlini et al. 2021): avg loss / zlib-compressed length of the answer
    text in bytes (open-unlearning src/evals/metrics/mia/zlib.py)."""
    return item.avg_loss / len(zlib.compress(item.text.encode("utf-8")))


ATTACKS = {"loss": mia_loss, "min_k": mia_min_k, "zlib": mia_zlib}


def auc(forget: Sequence[float], holdout: Sequence[float]) -> float:
    """ROC AUC of attack scores with forget labelled 0 and holdout 1, as open-unlearning's
    `mia_auc` (src/evals/metrics/mia/utils.py, `sklearn.metrics.roc_auc_score`): the
    probability that a holdout item scores higher (is less likely) than a forget item, ties
    counting 1/2. 1 when the forget data is much more likely than the holdout data, 0.5 when
    the model cannot tell them apart."""
    f = np.asarray(forget, dtype=np.float64)
    h = np.asarray(holdout, dtype=np.float64)
    if len(f) == 0 or len(h) == 0:
        raise KsmithError("auc: needs forget and holdout scores")
    # Mann-Whitney U through ranks (average ranks for ties), = roc_auc_score
    allv = np.concatenate([f, h])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    i = 0
    while i < len(allv):
        j = i
        while j + 1 < len(allv) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[len(f) :].sum() - len(h) * (len(h) + 1) / 2
    return float(u / (len(f) * len(h)))


def mia_aucs(
    forget: Sequence[ItemScores], holdout: Sequence[ItemScores], *, k: float = 0.4
) -> dict[str, float]:
    """AUC of each attack (loss, min_k, zlib) on forget vs holdout items (MUSE section 3.2,
    "no privacy leakage": D_forget against a holdout set D_holdout of the same distribution)."""
    out = {}
    for name, attack in ATTACKS.items():
        score = (lambda s, a=attack: a(s, k)) if name == "min_k" else attack
        out[name] = auc([score(s) for s in forget], [score(s) for s in holdout])
    return out


def privleak(auc_unlearned: float, auc_retain: float) -> float:
    """MUSE's PrivLeak (section 3.2): (AUC(f_unlearn) - AUC(f_retain)) / AUC(f_retain), where
    MUSE's AUC is 1 - the `auc` above (open-unlearning `privleak`,
    src/evals/metrics/privacy.py, converts the same way). Near 0: the unlearned model leaks
    as much as the retain model; strongly negative: under-unlearning (the forget set still
    looks like training data); positive: over-unlearning. A fraction (MUSE and
    open-unlearning print it x 100, in %)."""
    score, ref = 1 - auc_unlearned, 1 - auc_retain
    return (score - ref) / (ref + EPS)


# -- memorization: exact memorization and extraction strength -------------------------------


def exact_memorization(item: ItemScores) -> float:
    """EM: the share of answer tokens that are the teacher-forced argmax (Tirumala et al.
    2022; open-unlearning `exact_memorization`, src/evals/metrics/memorization.py)."""
    return float(np.mean(item.hits))


def extraction_strength(item: ItemScores) -> float:
    """ES = 1 - (1/|y|) min_k {k : the teacher-forced argmax after x, y_<k reproduces the whole
    suffix y_>=k} (Carlini et al. 2021's extraction as open-unlearning defines it, arXiv
    2506.12618 section 4, `extraction_strength` in src/evals/metrics/memorization.py): 1 when
    the whole answer is predicted, 0 when not even its last token is.

    The reference code leaves k at |y| - 1 when no suffix matches (ES = 1/|y|, and 1 for every
    one-token answer, matched or not); with ksmith's one-token answers that would make ES
    constant, so the definition's k = |y| (empty suffix) is used there instead."""
    hits = item.hits
    n = len(hits)
    k = n
    while k > 0 and hits[k - 1]:
        k -= 1
    return 1 - k / n


def mean_of(metric, items: Sequence[ItemScores]) -> float:
    """Mean of a per-item metric (`exact_memorization`, `extraction_strength`) over items."""
    if not items:
        raise KsmithError("no items to average")
    return float(np.mean([metric(s) for s in items]))


# -- what only a closed world allows ---------------------------------------------------------


def retain_agreement(
    unlearned: Mapping[str, str],
    retain: Mapping[str, str],
    probe_ids: Sequence[str] | None = None,
    *,
    seed: int = 0,
    name: str = "retain_agreement",
) -> dict[str, Any]:
    """The share of probes where the unlearned model answers as the retain model does (the
    exact counterfactual: the world without the forget set), with a seeded bootstrap interval
    (`ksmith.evaluate.stats.summarize`). `unlearned`, `retain`: probe id -> prediction (the
    chosen option, greedy continuation or greedy tokens, as predictions.parquet stores them);
    `probe_ids`: the probes to count (default: every probe both predicted)."""
    from ksmith.evaluate.stats import summarize

    ids = list(probe_ids) if probe_ids is not None else sorted(set(unlearned) & set(retain))
    missing = [i for i in ids if i not in unlearned or i not in retain]
    if missing:
        raise KsmithError(
            f"retain_agreement: {len(missing)} probes lack a prediction of one of the models, "
            f"e.g. {missing[:3]}"
        )
    same = [float(_norm(unlearned[i]) == _norm(retain[i])) for i in ids]
    return summarize(name, same, "agreement", seed=seed)


def _norm(text: str) -> str:
    return " ".join(str(text).lower().split())
