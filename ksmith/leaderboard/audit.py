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
   found among the auditor's editor folders or trained again and checked (`_trained_editor`);
   the claimed `editor_path` is only where the submitter had it.
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
"""

from __future__ import annotations

import json
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
from ksmith.io import canonical_json, file_sha256
from ksmith.leaderboard.checks import NO_UPDATE
from ksmith.leaderboard.models import ModelResolver, one_thread
from ksmith.leaderboard.predictions import read_predictions
from ksmith.leaderboard.records import AuditRecord
from ksmith.leaderboard.schema import PREDICTIONS_FILE, SUBMISSION_FILE, Submission
from ksmith.leaderboard.submit import UPDATES_DIR
from ksmith.leaderboard.verify import SubmissionError, Verified

log = logging.getLogger(__name__)

MISS_RATE = 0.01
CONFIDENCE = 0.999
TOLERANCE = 1e-3  # nats; float rounding moves log-probabilities by ~1e-6


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


class NotReexecutable(KsmithError):
    """This submission cannot be re-executed here (the reason is the message)."""


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
    ) -> None:
        from ksmith.evaluate.scoring import judge_probes, with_prefix

        wanted = sorted({r["probe_id"] for r in rows})
        judged = judge_probes(
            backend, [probes[p] for p in wanted], prefixes=prefixes, chunk_size=256, desc="audit"
        )
        fresh = {(j["probe_id"], j["mode"]): j for j in judged}
        for r in rows:
            p = probes[r["probe_id"]]
            prompt = with_prefix(p["prompt"], prefixes.get(p["request_id"], ""))
            j = fresh[(r["probe_id"], r["mode"])]
            why = _mismatch(r, j, p, prompt, backend, self.options.tolerance)
            if why is not None:
                where = f"{config} {r['probe_id']} {r['stage']} {r['mode']}"
                raise SubmissionError(
                    self.sid,
                    f"{where}: re-execution disagrees: {why}",
                    file=self.folder / PREDICTIONS_FILE,
                    field="prediction",
                )
            self.ties += _is_tie(r, j)


# -- the updated models -----------------------------------------------------------------------


def _claimed_params(sub: Submission, config: str) -> dict[str, Any]:
    cell = next(c for c in sub.cells if c.config == config)
    return {**sub.method.params, **cell.params}


def _same(a: Any, b: Any) -> bool:
    return canonical_json(a) == canonical_json(b)


def _check_artifact(sub: Submission, folder: Path, udir: Path, config: str) -> None:
    """The carried update.json must describe the claimed run."""
    from ksmith.methods.artifacts import read_update

    where = udir / "update.json"
    try:
        info = read_update(udir)
    except KsmithError as e:
        raise SubmissionError(sub.id, str(e), file=where, field=None) from e
    model = info.get("model") if isinstance(info.get("model"), dict) else {}
    claims = {
        "method": (info.get("method"), sub.method.name),
        "params": (info.get("params"), _claimed_params(sub, config)),
        "config": (info.get("config"), config),
        "dataset_fingerprint": (info.get("dataset_fingerprint"), sub.dataset.fingerprint),
        "model.fingerprint": (model.get("fingerprint"), sub.model.fingerprint),
        "mode": (info.get("mode", "batch"), sub.method.mode),
    }
    for field, (recorded, claimed) in claims.items():
        if not _same(recorded, claimed):
            raise SubmissionError(
                sub.id,
                f"the update records {recorded!r}, the submission claims {claimed!r}",
                file=where,
                field=field,
            )
    if sub.seeds and info.get("seed") not in sub.seeds:
        raise SubmissionError(
            sub.id, f"seed {info.get('seed')!r} is not among {sub.seeds}", file=where, field="seed"
        )


def _trained_editor(
    sub: Submission, folder: Path, model: Path, dataset: Path, editors: Sequence[Path], out: Path
) -> Path | None:
    """The trained editor the submission's method ran (SERAC, MEND), found by its recorded
    fingerprint (`method.editor`): at the claimed `editor_path` read from here, in one of
    `editors` or its `<method>` subfolder, else trained again from the recorded settings into
    `out` (training is deterministic) and checked against the fingerprint. None for a method
    without a trained editor."""
    from ksmith.methods.trained.commands import TRAINED_METHODS, train_editor
    from ksmith.methods.trained.editor import WEIGHTS_FILE, editor_fingerprint

    name = sub.method.name
    if name not in TRAINED_METHODS:
        return None
    claimed = sub.method.editor
    if claimed is None:
        raise NotReexecutable(
            f"method {name!r} runs a trained editor and the submission records none by content "
            "(method.editor, written by ksmith submit since the editor's path is only where it "
            "was on the submitter's machine); submit again, or carry update artifacts "
            "(ksmith submit --with-updates)"
        )
    paths = {str(p["editor_path"]) for c in sub.cells for p in [_claimed_params(sub, c.config)]
             if p.get("editor_path")}  # fmt: skip
    candidates = [Path(p) for p in sorted(paths)]
    candidates += [c for e in editors for c in (Path(e), Path(e) / name)]
    for c in candidates:
        if (c / WEIGHTS_FILE).is_file() and editor_fingerprint(c) == claimed.fingerprint:
            log.info("audit %s: the %s editor %s is found at %s", sub.id, name,
                     claimed.fingerprint[:12], c)  # fmt: skip
            return c
    log.info("audit %s: the %s editor %s is not among %s; training it again", sub.id, name,
             claimed.fingerprint[:12], [str(c) for c in candidates])  # fmt: skip
    settings = tuple(f"{k}={json.dumps(v)}" for k, v in sorted(claimed.training.items()))
    try:
        train_editor(name, dataset, model, out, overrides=settings, progress=False)
    except KsmithError as e:
        raise SubmissionError(
            sub.id, f"training the claimed editor again failed: {e}",
            file=folder / SUBMISSION_FILE, field="method.editor.training",
        ) from e  # fmt: skip
    got = editor_fingerprint(out)
    if got != claimed.fingerprint:
        raise SubmissionError(
            sub.id,
            f"the {name} editor trained again from the claimed settings on this model and "
            f"dataset has weights {got}, the submission claims {claimed.fingerprint}",
            file=folder / SUBMISSION_FILE,
            field="method.editor.fingerprint",
        )
    return out


def _rerun(
    sub: Submission,
    folder: Path,
    model: Path,
    dataset: Path,
    config: str,
    groups,
    out: Path,
    editor: Path | None = None,
) -> Path:
    """Run the claimed method again on `groups` of `config` (with the trained `editor` found
    for it, in place of the claimed editor_path); the update folder written."""
    from ksmith.methods.commands import UpdateRun, update_from_dataset

    claimed = _claimed_params(sub, config)
    if editor is not None:
        claimed = {**claimed, "editor_path": str(editor)}
    overrides = tuple(f"{k}={json.dumps(v)}" for k, v in sorted(claimed.items()))
    run = UpdateRun(
        model=str(model), dataset=str(dataset), config=config, method=sub.method.name,
        out=str(out), overrides=overrides, mode=sub.method.mode, groups=tuple(sorted(groups)),
        device="cpu", seed=sub.seeds[0] if sub.seeds else 0,
    )  # fmt: skip
    try:
        info = update_from_dataset(run)
    except KsmithError as e:
        raise SubmissionError(
            sub.id,
            f"{config}: re-running the claimed update failed: {e}",
            file=folder / SUBMISSION_FILE,
            field="method",
        ) from e
    if not _same(info["params"], claimed):
        raise SubmissionError(
            sub.id,
            f"{config}: the method resolves the claimed parameters to {info['params']}",
            file=folder / SUBMISSION_FILE,
            field="method.params",
        )
    return out


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
    (`_trained_editor`), else trains it again."""
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
            editor = _trained_editor(sub, folder, model_dir, dataset, editors, Path(tmp) / "editor")
        for config in tqdm(sorted(by_config), desc=f"audit {sub.id}", unit="config", leave=False):
            probes = {p["id"]: p for p in load_probes(dataset, config)}
            before = [r for r in by_config[config] if r["stage"] == "before"]
            after: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
            for r in by_config[config]:
                if r["stage"] == "after":
                    after[int(r["group"])].append(r)
            if before:
                scorer.check(
                    make_backend(base, tokenizer, eval_options), config, before, probes, {}
                )
            if not after:
                continue
            if source == "no-update":
                same = [r for g in sorted(after) for r in after[g]]
                scorer.check(make_backend(base, tokenizer, eval_options), config, same, probes, {})
                continue
            if source == "artifacts":
                udir = folder / UPDATES_DIR / config
                _check_artifact(sub, folder, udir, config)
            else:
                udir = _rerun(
                    sub, folder, model_dir, dataset, config, after, Path(tmp) / config, editor
                )
            for g in sorted(after):
                try:
                    with applied_update(base, udir, g) as (updated, prefixes):
                        check_finite_weights(updated, f"{udir} group {g}")
                        backend = make_backend(updated, tokenizer, eval_options)
                        scorer.check(backend, config, after[g], probes, prefixes)
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
