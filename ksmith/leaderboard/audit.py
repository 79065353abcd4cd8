"""Re-execution audit: the submitted predictions are what the claimed update makes the model say.

`verify` recomputes every number from the predictions, so it cannot catch a submitter who
rewrites predictions and recomputes everything to match. The audit re-executes instead:

1. The world model is found by the submission's `model.fingerprint` (`models.py`: a folder
   given with `--models`, or regenerated from the board's `models.yaml`; deterministic, so the
   fingerprint must match).
2. Each audited group's updated model is made again: from the update artifact the submission
   carries (`updates/<config>/`, written by `ksmith submit --with-updates`: the runner's weight
   delta or in-context prefixes, whose `update.json` must name the claimed method, parameters,
   seed, model and dataset), or, without artifacts, by running the registered method again with
   the claimed parameters and seed (`ksmith.methods.commands.update_from_dataset`, one thread,
   as the pipeline runs it). A method with a trained editor (SERAC, MEND) runs the editor the
   submission records by content (`method.editor`: weights fingerprint, training settings),
   found among the auditor's editor folders or trained again and checked
   (`ksmith.leaderboard.rerun`); the claimed `editor_path` is only where the submitter had it.
3. The audited rows are scored again with the evaluator's own code
   (`ksmith.evaluate.scoring.judge_probes`) and compared with the submitted rows.

**Sample size.** Rows are drawn uniformly without replacement. If a fraction `miss_rate` of a
submission's rows is false, a sample of n rows misses every false row with probability at most
(1 - miss_rate)^n, so n = ceil(ln(1 - confidence) / ln(1 - miss_rate)) rows catch it with
probability >= confidence: 688 rows for a lie about 1% of rows caught with probability 0.999
(`audit_size`). Smaller submissions are audited whole; `full=True` audits every row.

**Seed.** Left unset, the sample's seed is drawn fresh from the operating system and printed
with the result, so a submitter cannot know in advance which rows are audited (a seed derived
from the submission's own content could be searched for); `--audit-seed` reproduces an audit.

**Floating-point ties.** Scoring a subset batches requests differently from the evaluation
run, which can move log-probabilities by float rounding (about 1e-6). A recomputed prediction
that differs is accepted only when the submitted one is an equally good answer of the model up
to `tolerance` nats: an mcq option whose log-likelihood is within tolerance of the best, a
generated text each of whose tokens is within tolerance of the most likely token, a cloze
score whose token hits differ only at near-ties. A rewritten answer the model did not give is
far outside any tolerance.

**The evaluation's batches.** Two things float rounding can turn that no token tolerance
covers: a reasoned probe's recall (the answer is then asked after another text), and an editor
that routes by a threshold (SERAC's scope classifier, WISE's side memory), whose decision can
flip. So each audited recall is generated among the reasoned prompts the evaluation scored
with it (`recall_prompts`), and a row that still disagrees is re-scored exactly as the
evaluation scored it, within its evaluation chunk (`in_evaluation_chunk`), before it counts
as a disagreement: the same model state and code give the same bits there.
"""

from __future__ import annotations

import logging
import math
import os
import random
import stat
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ksmith.errors import KsmithError
from ksmith.io import file_sha256
from ksmith.leaderboard.checks import NO_UPDATE
from ksmith.leaderboard.models import ModelResolver, one_thread
from ksmith.leaderboard.predictions import read_predictions
from ksmith.leaderboard.records import AuditRecord
from ksmith.leaderboard.rerun import NotReexecutable, check_artifact, rerun, trained_editor
from ksmith.leaderboard.schema import PREDICTIONS_FILE, SUBMISSION_FILE, Submission
from ksmith.leaderboard.submit import UPDATES_DIR
from ksmith.leaderboard.verify import SubmissionError, Verified

log = logging.getLogger(__name__)

MISS_RATE = 0.01
CONFIDENCE = 0.999
TOLERANCE = 1e-3  # nats; float rounding moves log-probabilities by ~1e-6
CHUNK_SIZE = 256  # probes per scoring step, as `ksmith.evaluate.runner.EvalOptions.chunk_size`


def audit_size(miss_rate: float = MISS_RATE, confidence: float = CONFIDENCE) -> int:
    """Rows to sample so that a lie about `miss_rate` of the rows is caught with probability
    >= `confidence`: the least n with (1 - miss_rate)^n <= 1 - confidence (688 by default)."""
    if not (0 < miss_rate < 1 and 0 < confidence < 1):
        raise KsmithError("audit miss_rate and confidence must be in (0, 1)")
    return math.ceil(math.log(1 - confidence) / math.log(1 - miss_rate))


@dataclass(frozen=True)
class AuditOptions:
    """How to audit: sample (or every row), seed, tie tolerance, scoring batch size."""

    seed: int | None = None  # None: a fresh seed from the operating system
    full: bool = False
    miss_rate: float = MISS_RATE
    confidence: float = CONFIDENCE
    tolerance: float = TOLERANCE
    batch_size: int = 64


# -- what can be re-executed ------------------------------------------------------------------


def _updates_dir(folder: Path) -> Path | None:
    """The submission's update artifacts, refusing links anywhere inside."""
    root = folder / UPDATES_DIR
    if not root.exists() and not root.is_symlink():
        return None
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                rel = path.relative_to(folder)
                raise SubmissionError(
                    folder.name, "is a link or special file", file=folder / rel, field=None
                )
    if root.is_symlink() or not root.is_dir():
        raise SubmissionError(folder.name, "is not a folder", file=root, field=None)
    return root


def source_of(sub: Submission, folder: Path, models: ModelResolver) -> str:
    """ "artifacts" or "re-run"; NotReexecutable says why neither is possible here."""
    from ksmith.methods import METHODS, load_builtin_methods

    if not models.known(sub.model.fingerprint):
        raise NotReexecutable(
            f"model {sub.model.id!r} (fingerprint {sub.model.fingerprint}) is not a world model "
            "this board can regenerate (models.yaml) and no --models folder has it"
        )
    if _updates_dir(folder) is not None:
        return "artifacts"
    if sub.method.name == NO_UPDATE:
        return "no-update"  # the baseline: its after stage is the base model again
    load_builtin_methods()
    if sub.method.name not in METHODS:
        raise NotReexecutable(
            f"method {sub.method.name!r} is external and the submission carries no update "
            "artifacts (ksmith submit --with-updates)"
        )
    if len(sub.seeds) > 1:
        raise NotReexecutable(f"seeds {sub.seeds}: one seed per submission can be re-run")
    return "re-run"


# -- the sample -------------------------------------------------------------------------------

_KEY = ("config", "probe_id", "stage", "mode")


def audit_sample(
    rows: Sequence[Mapping[str, Any]], options: AuditOptions, seed: int
) -> list[Mapping[str, Any]]:
    """The audited rows: all of them, or a uniform sample without replacement of
    `audit_size` rows, drawn by `seed` from the rows in canonical order."""
    ordered = sorted(rows, key=lambda r: tuple(str(r[k]) for k in _KEY))
    n = audit_size(options.miss_rate, options.confidence)
    if options.full or len(ordered) <= n:
        return ordered
    picked = sorted(random.Random(seed).sample(range(len(ordered)), n))
    return [ordered[i] for i in picked]


# -- re-scoring and comparing -----------------------------------------------------------------


def _token_logprobs(
    backend: Any, prompt: str, continuation: str
) -> list[tuple[float, float, float]]:
    """The backend's per-token log-probabilities and margins (`HFBackend.token_logprobs`)."""
    get = getattr(backend, "token_logprobs", None)
    if get is None:
        raise KsmithError(
            f"the audit needs per-token log-probabilities, which backend "
            f"{type(backend).__name__} does not give; audit with the hf backend"
        )
    return get(prompt, continuation)


def _greedy_up_to_ties(backend: Any, prompt: str, text: str, tol: float) -> bool:
    """Every token of `text` after `prompt` is within `tol` of the model's best token."""
    lps = _token_logprobs(backend, prompt, " " + text.strip())
    return bool(lps) and all(target >= best - tol for target, best, _ in lps)


def _cloze_score_up_to_ties(backend: Any, prompt: str, answer: str, score: float, tol: float):
    """The submitted token accuracy is possible when near-ties are decided either way."""
    lps = _token_logprobs(backend, prompt, " " + answer)
    if not lps:
        return False
    sure = sum(1 for target, _, other in lps if target > other + tol)
    unsure = sum(
        1 for target, best, other in lps if not target > other + tol and target >= best - tol
    )
    hits = score * len(lps)
    return sure - 1e-9 <= hits <= sure + unsure + 1e-9


def _mismatch(
    row: Mapping[str, Any],
    fresh: Mapping[str, Any],
    probe: Mapping[str, Any],
    prompt: str,
    backend: Any,
    tol: float,
) -> str | None:
    """Why the submitted row is not what the model gives, or None if it is (up to ties)."""
    stage, mode = row["stage"], row["mode"]
    pred, again = str(row["prediction"]), str(fresh["prediction"])
    score, fresh_score = float(row["score"]), _fresh_score(row, fresh)
    answer = probe["answer_before" if stage == "before" else "answer_after"]
    if mode == "mcq":
        if pred != again:
            ll_sub, ll_again = backend.loglikelihood([(prompt, " " + pred), (prompt, " " + again)])
            if ll_sub < ll_again - tol:
                return f"re-executed answer {again!r}, submitted {pred!r}"
        if not math.isclose(score, fresh_score, rel_tol=1e-4, abs_tol=tol):
            return f"re-executed log-likelihood {fresh_score:.6f}, submitted {score:.6f}"
        return None
    if pred != again and not _greedy_up_to_ties(backend, prompt, pred, tol):
        return f"re-executed prediction {again!r}, submitted {pred!r}"
    if mode == "cloze" and not math.isclose(score, fresh_score, abs_tol=1e-9):
        if not _cloze_score_up_to_ties(backend, prompt, answer, score, tol):
            return f"re-executed token accuracy {fresh_score}, submitted {score}"
    return None


def _fresh_score(row: Mapping[str, Any], fresh: Mapping[str, Any]) -> float:
    """The re-executed score of the submitted row's stage."""
    return float(fresh["score_before" if row["stage"] == "before" else "score_after"])


def _is_tie(row: Mapping[str, Any], fresh: Mapping[str, Any]) -> bool:
    """An accepted row that differs from the re-execution (so it was decided by a near-tie)."""
    return str(row["prediction"]) != str(fresh["prediction"]) or (
        row["mode"] == "cloze" and float(row["score"]) != _fresh_score(row, fresh)
    )


def recall_prompts(
    backend: Any,
    scored_with: Sequence[Mapping[str, Any]],
    prefixes: Mapping[str, str],
    wanted: Sequence[str],
) -> dict[str, str]:
    """probe id -> the prompt its answer is scored after, for the `wanted` probes, with each
    reasoned probe's recall generated as the evaluation generated it: among the reasoned
    prompts of `scored_with` (the probes the evaluation scored together), whose set fixes the
    batches (`ksmith.evaluate.scoring.reasoned_prompts`). Greedy decoding in other batches is
    the same up to float rounding, and a recall that a near-tie turns elsewhere (a
    degenerate model, a side memory's routing at its threshold) asks the answer after another
    text: measured, 2 of 20 baseline submissions failed their audit so. The probes without a
    cue that are not wanted are left out (they generate nothing)."""
    from ksmith.evaluate.scoring import scored_prompts

    wanted_set = set(wanted)
    context = [p for p in scored_with if p.get("cue") or p["id"] in wanted_set]
    scored = scored_prompts(backend, context, prefixes, chunk_size=CHUNK_SIZE, desc="audit")
    prompt_of = {p["id"]: s for p, s in zip(context, scored, strict=True)}
    missing = wanted_set - set(prompt_of)
    if missing:
        raise KsmithError(f"audited probes {sorted(missing)[:3]} are not among those scored")
    return prompt_of


def in_evaluation_chunk(
    backend: Any,
    scored_with: Sequence[Mapping[str, Any]],
    prefixes: Mapping[str, str],
    prompt_of: Mapping[str, str],
    row: Mapping[str, Any],
) -> Mapping[str, Any]:
    """`row`'s judgement re-computed exactly as the evaluation computed it: its probe judged
    within the `CHUNK_SIZE` probes of `scored_with` it was judged with
    (`ksmith.evaluate.scoring.judge_probes` batches each chunk on its own), after the
    evaluation's recalls (`prompt_of`, from `recall_prompts`). The same model state and code
    then give the same bits, so a row
    that a re-execution in the audit's own batches turned at a near-tie (a threshold-routed
    editor's scope decision, a degenerate continuation) is checked without any tolerance."""
    from ksmith.evaluate.scoring import judge_probes, with_prefix

    ids = [p["id"] for p in scored_with]
    at = ids.index(row["probe_id"])
    start = at - at % CHUNK_SIZE
    chunk = list(scored_with[start : start + CHUNK_SIZE])
    scored = [  # a probe without a cue is scored after its prompt (and prefix) alone
        prompt_of.get(p["id"]) or with_prefix(p["prompt"], prefixes.get(p["request_id"], ""))
        for p in chunk
    ]
    judged = judge_probes(
        backend, chunk, prefixes=prefixes, chunk_size=CHUNK_SIZE, desc="audit chunk", scored=scored
    )
    return next(j for j in judged if j["probe_id"] == row["probe_id"] and j["mode"] == row["mode"])


class _Scorer:
    """Scores audited rows on one model state and compares them."""

    def __init__(self, sid: str, folder: Path, options: AuditOptions):
        self.sid, self.folder, self.options = sid, folder, options
        self.ties = 0

    def check(
        self,
        backend: Any,
        config: str,
        rows: Sequence[Mapping[str, Any]],
        probes: Mapping[str, Mapping[str, Any]],
        prefixes: Mapping[str, str],
        scored_with: Sequence[Mapping[str, Any]],
    ) -> None:
        """Re-score `rows` on `backend`. `scored_with` are the probes the evaluation scored
        together on this model state (the whole config before any update, one group after):
        a reasoned probe's recall is generated among the same prompts, in the same batches,
        as the evaluation's (`recall_prompts`)."""
        from ksmith.evaluate.scoring import judge_probes

        wanted = sorted({r["probe_id"] for r in rows})
        asked = [probes[p] for p in wanted]
        # the prompts the answers are scored after (a reasoned probe's: with the model's recall)
        prompt_of = recall_prompts(backend, scored_with, prefixes, wanted)
        scored = [prompt_of[p] for p in wanted]
        judged = judge_probes(
            backend, asked, prefixes=prefixes, chunk_size=CHUNK_SIZE, desc="audit", scored=scored
        )
        fresh = {(j["probe_id"], j["mode"]): j for j in judged}
        for r in rows:
            p = probes[r["probe_id"]]
            prompt = prompt_of[r["probe_id"]]
            j = fresh[(r["probe_id"], r["mode"])]
            why = _mismatch(r, j, p, prompt, backend, self.options.tolerance)
            rescored = why is not None
            if rescored:  # re-score it exactly as the evaluation did, in its chunk
                j = in_evaluation_chunk(backend, scored_with, prefixes, prompt_of, r)
                why = _mismatch(r, j, p, prompt, backend, self.options.tolerance)
                log.info(
                    "audit %s: %s %s %s re-scored in its evaluation chunk: %s", self.sid,
                    config, r["probe_id"], r["mode"], "agrees" if why is None else "disagrees",
                )  # fmt: skip
            if why is not None:
                where = f"{config} {r['probe_id']} {r['stage']} {r['mode']}"
                raise SubmissionError(
                    self.sid,
                    f"{where}: re-execution disagrees: {why}",
                    file=self.folder / PREDICTIONS_FILE,
                    field="prediction",
                )
            self.ties += rescored or _is_tie(r, j)  # decided at a near-tie, either way


# -- the audit --------------------------------------------------------------------------------


def audit_submission(
    verified: Verified,
    dataset: Path,
    models: ModelResolver,
    options: AuditOptions = AuditOptions(),
    editors: Sequence[Path] = (),
) -> AuditRecord:
    """Re-execute a verified submission on its audit sample; raise SubmissionError on the first
    row the model does not give, NotReexecutable when it cannot be run here. A re-run method
    with a trained editor takes it from `editors` when one there has the claimed fingerprint
    (`ksmith.leaderboard.rerun.trained_editor`), else trains it again."""
    from ksmith.data import load_probes
    from ksmith.evaluate.runner import EvalOptions, check_finite_weights, make_backend
    from ksmith.methods.artifacts import applied_update
    from ksmith.models import load_model

    sub, folder = verified.submission, verified.folder
    source = source_of(sub, folder, models)
    model_dir = models.resolve(sub.model.fingerprint)
    assert model_dir is not None  # source_of checked it is known
    seed = options.seed if options.seed is not None else int.from_bytes(os.urandom(4), "big")
    rows = read_predictions(folder / PREDICTIONS_FILE)
    sample = audit_sample(rows, options, seed)
    by_config: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in sample:
        by_config[str(r["config"])].append(r)
    log.info(
        "audit %s: %d of %d rows (%s, seed %d) on %s", sub.id, len(sample), len(rows), source,
        seed, model_dir,
    )  # fmt: skip
    scorer = _Scorer(sub.id, folder, options)
    eval_options = EvalOptions(device="cpu", batch_size=options.batch_size)
    from tqdm.auto import tqdm

    with one_thread(), tempfile.TemporaryDirectory(prefix="ksmith-audit-") as tmp:
        base, tokenizer = load_model(str(model_dir), device="cpu")
        check_finite_weights(base, str(model_dir))
        editor = None
        if source == "re-run" and any(r["stage"] == "after" for r in sample):
            editor = trained_editor(sub, folder, model_dir, dataset, editors, Path(tmp) / "editor")
        for config in tqdm(sorted(by_config), desc=f"audit {sub.id}", unit="config", leave=False):
            # in the evaluation's order: the whole config before any update, one group after
            listed = sorted(load_probes(dataset, config), key=lambda p: (int(p["group"]), p["id"]))
            probes = {p["id"]: p for p in listed}
            of_group: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
            for p in listed:
                of_group[int(p["group"])].append(p)
            before = [r for r in by_config[config] if r["stage"] == "before"]
            after: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
            for r in by_config[config]:
                if r["stage"] == "after":
                    after[int(r["group"])].append(r)
            if before:
                scorer.check(
                    make_backend(base, tokenizer, eval_options), config, before, probes, {}, listed
                )
            if not after:
                continue
            if source == "no-update":
                same = [r for g in sorted(after) for r in after[g]]
                backend = make_backend(base, tokenizer, eval_options)
                scorer.check(backend, config, same, probes, {}, listed)  # after IS before
                continue
            if source == "artifacts":
                udir = folder / UPDATES_DIR / config
                check_artifact(sub, folder, udir, config)
            else:
                udir = rerun(
                    sub, folder, model_dir, dataset, config, after, Path(tmp) / config, editor
                )
            for g in sorted(after):
                try:
                    with applied_update(base, udir, g) as (updated, prefixes):
                        check_finite_weights(updated, f"{udir} group {g}")
                        backend = make_backend(updated, tokenizer, eval_options)
                        scorer.check(backend, config, after[g], probes, prefixes, of_group[g])
                except SubmissionError:
                    raise
                except KsmithError as e:  # a damaged artifact
                    raise SubmissionError(sub.id, str(e), file=udir, field=None) from e
    return AuditRecord(
        submission=sub.id,
        submission_sha256=file_sha256(folder / SUBMISSION_FILE),
        predictions_digest=verified.digest,
        model_fingerprint=str(sub.model.fingerprint),
        dataset_fingerprint=sub.dataset.fingerprint,
        source=source,
        seed=seed,
        rows=len(rows),
        audited=len(sample),
        ties=scorer.ties,
        miss_rate=options.miss_rate,
        confidence=options.confidence,
    )
