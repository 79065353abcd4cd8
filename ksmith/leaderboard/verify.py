"""`ksmith leaderboard verify`: recompute every number of a submission from its predictions.

Never trusts the submission: the dataset is found by fingerprint (datasets.py), each prediction
string is judged again against the dataset's own expected answers with the evaluator's rules
(`ksmith.evaluate.scoring`), `correct` and `changed` are derived again as docs/contracts.md
section 6 defines them, and the metrics are recomputed with the same function the evaluator uses
(`ksmith.evaluate.metrics.compute_metrics`). Any disagreement is an error naming the submission
and the field. Verification only reads the submission's files. Before recomputing, the board's own
rules are checked (checks.py): regular files only, sizes bounded by the dataset and read from
metadata first, the board's bootstrap settings, the method claim, clean text, numbers in range,
and no second copy of another submission's predictions.

An unlearn cell measured against the retain model (forget quality, retain agreement, ... of
`ksmith.evaluate.retain_metrics`) is recomputed with that module's `cell_metrics` from the
submission's per-item token scores and the retain model's rows and predictions
(ksmith.leaderboard.unlearning); a cell claiming such a metric without those rows is rejected.

Judging a prediction string (what can be recomputed from it):

- ``mcq``: the prediction must be one of the options; it matches an answer when equal to it.
- ``gen_exact`` / ``gen_contains``: normalized exact match / whole-word containment; the row's
  ``score`` must equal its stage's match (1.0 or 0.0).
- ``cloze``: the evaluator decides a match by teacher-forced token accuracy (score = 1.0), which
  needs the model. Checked: the stage's flag agrees with its score, and a claimed match is
  backed by the prediction (its leading words, normalized, are the answer's).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ksmith.errors import KsmithError, SpecError
from ksmith.leaderboard import checks, unlearning
from ksmith.leaderboard.checks import DEFAULT_POLICY, BoardPolicy
from ksmith.leaderboard.datasets import DatasetResolver
from ksmith.leaderboard.predictions import read_predictions
from ksmith.leaderboard.rescore import SubmissionError, _Ctx, compare_metrics, rescore
from ksmith.leaderboard.schema import (
    PREDICTIONS_FILE,
    SUBMISSION_FILE,
    Cell,
    Submission,
    load_submission,
    parse_config,
)

log = logging.getLogger(__name__)


def _check_cell_in_dataset(ctx: _Ctx, i: int, cell: Cell, configs: list[str], suite: str) -> None:
    if cell.config in configs:
        return
    parts = parse_config(cell.config)
    levels = sorted({parse_config(c)["level"] for c in configs})
    scales = sorted({int(parse_config(c)["scale"]) for c in configs})
    domains = sorted({parse_config(c)["domain"] for c in configs})
    if parts["level"] not in levels:
        msg = f"level {parts['level']!r} is not a level of dataset '{suite}' ({', '.join(levels)})"
        raise ctx.fail(msg, f"cells[{i}].level")
    if int(parts["scale"]) not in scales:
        msg = f"scale {parts['scale']} is not a scale of dataset '{suite}' ({scales})"
        raise ctx.fail(msg, f"cells[{i}].scale")
    if parts["domain"] not in domains:
        msg = f"domain {parts['domain']!r} is not in dataset '{suite}' ({', '.join(domains)})"
        raise ctx.fail(msg, f"cells[{i}].config")
    raise ctx.fail(f"config {cell.config!r} is not in dataset '{suite}'", f"cells[{i}].config")


@dataclass(frozen=True)
class Verified:
    """A verified submission, the dataset's configs of each kind (for coverage), and the
    digest of its predictions (for duplicates)."""

    submission: Submission
    folder: Path
    suite_configs: tuple[str, ...]
    digest: str


def _check_claims(ctx: _Ctx, sub: Submission, policy: BoardPolicy) -> None:
    """Board settings, clean text and the method claim: everything the YAML alone decides."""
    if (sub.bootstrap.seed, sub.bootstrap.n_boot) != (policy.bootstrap_seed, policy.n_boot):
        raise ctx.fail(
            f"bootstrap settings are fixed by the board (seed {policy.bootstrap_seed}, n_boot "
            f"{policy.n_boot}); the submission declares seed {sub.bootstrap.seed}, n_boot "
            f"{sub.bootstrap.n_boot}",
            "bootstrap",
        )
    for problem in (checks.check_text(sub), checks.check_method(sub)):
        if problem is not None:
            raise ctx.fail(problem[1], problem[0])


def _read_bounded(ctx: _Ctx, folder: Path, card: Mapping[str, Any], sub: Submission, policy):
    """The prediction rows, after the sizes the dataset implies are checked from metadata."""
    configs = [c.config for c in sub.cells]
    yaml_limit = policy.yaml_bytes_per_config * max(1, len(card.get("counts") or {})) + (1 << 16)
    bad = checks.yaml_size_error(folder / SUBMISSION_FILE, yaml_limit)
    if bad is not None:
        raise ctx.fail(bad, None)
    limit = checks.max_rows(card.get("counts") or {}, configs, policy)
    bad = checks.predictions_bounds_error(folder / PREDICTIONS_FILE, limit, policy)
    if bad is not None:
        raise ctx.pfail(bad, None)  # type: ignore[arg-type]
    try:
        return read_predictions(folder / PREDICTIONS_FILE)
    except SpecError as e:
        raise ctx.pfail(e.message, e.field) from e  # type: ignore[arg-type]


def _read_unlearning(ctx: _Ctx, folder: Path, card, sub: Submission, policy):
    """The submission's unlearning rows (ksmith.leaderboard.unlearning), or None."""
    try:
        return unlearning.read(folder, card, [c.config for c in sub.cells], policy)
    except SpecError as e:
        raise ctx.fail(e.message, e.field, Path(e.file or "").name) from e


def _unlearning_metrics(
    ctx: _Ctx, i: int, cell: Cell, probes, fresh, rows, policy: BoardPolicy
) -> dict[str, dict[str, Any]]:
    """The metrics against the retain model, recomputed from the submission's rows with the
    evaluator's own `cell_metrics`; a cell claiming them without rows is rejected."""
    claims = unlearning.claimed(cell)
    if rows is None or cell.config not in rows.configs:
        if claims:
            raise ctx.fail(
                f"claims metrics against the retain model, but the submission has no rows to "
                f"recompute them ({unlearning.ITEMS_FILE}, {unlearning.RETAIN_PREDICTIONS_FILE}, "
                f"{unlearning.RETAIN_FILE} for this config)",
                f"cells[{i}].metrics.{claims[0]}",
            )
        return {}
    if cell.kind != "unlearn":
        raise ctx.fail(f"unlearning rows for an {cell.kind} cell", "config", unlearning.ITEMS_FILE)
    retain = _rescore_retain(ctx, cell.config, probes, rows.predictions[cell.config])
    try:
        out = unlearning.recompute(
            cell.config, probes, fresh, retain, rows, seed=policy.bootstrap_seed,
            n_boot=policy.n_boot,
        )  # fmt: skip
    except SpecError as e:
        raise ctx.fail(e.message, e.field, Path(e.file or "").name) from e
    for name in claims:
        if name not in out:
            raise ctx.fail("not produced by recomputing this cell from its rows",
                           f"cells[{i}].metrics.{name}")  # fmt: skip
    return out


def _rescore_retain(ctx: _Ctx, config: str, probes, rows) -> list[dict[str, Any]]:
    """The retain model's predictions, checked against the dataset like the submission's own;
    errors name retain_predictions.parquet."""
    try:
        return rescore(ctx, config, probes, rows)
    except SubmissionError as e:
        raise ctx.fail(e.message, e.field, unlearning.RETAIN_PREDICTIONS_FILE) from e


def verify_submission(
    folder: str | Path, resolver: DatasetResolver, policy: BoardPolicy = DEFAULT_POLICY
) -> Submission:
    """Check one submission folder end to end; return it if every number checks out."""
    return _verify(Path(folder), resolver, policy).submission


def _verify(folder: Path, resolver: DatasetResolver, policy: BoardPolicy) -> Verified:
    from ksmith.data import list_configs, load_probes, read_card
    from ksmith.evaluate.metrics import compute_metrics

    ctx = _Ctx(folder.name, folder)
    if not folder.is_dir():
        raise ctx.fail("submission folder does not exist", None, "")
    link = checks.regular_files(folder)
    if link is not None:
        raise ctx.fail(link[1], None, link[0])
    for name in (SUBMISSION_FILE, PREDICTIONS_FILE):
        if not (folder / name).is_file():
            raise ctx.fail("missing file", None, name)
    bad = checks.yaml_size_error(folder / SUBMISSION_FILE, policy.yaml_bytes_max)
    if bad is not None:
        raise ctx.fail(bad, None)
    try:
        sub = load_submission(folder)
    except SpecError as e:
        file = Path(e.file).name if e.file else SUBMISSION_FILE
        raise ctx.fail(e.message, e.field, file) from e
    ctx.sid = sub.id
    if sub.id != folder.name:
        raise ctx.fail(f"id {sub.id!r} differs from its folder name {folder.name!r}", "id")
    _check_claims(ctx, sub, policy)

    dataset = resolver.resolve(sub.dataset.fingerprint)
    if dataset is None:
        known = ", ".join(f[:12] for f in resolver.known()) or "none"
        raise ctx.fail(
            f"unknown dataset fingerprint {sub.dataset.fingerprint} (known: {known}); pass "
            "--datasets DIR or add its suite spec to leaderboard/datasets.yaml",
            "dataset.fingerprint",
        )
    card = read_card(dataset)
    if card.get("suite") != sub.dataset.suite:
        raise ctx.fail(f"the dataset's suite is {card.get('suite')!r}", "dataset.suite")
    configs = list_configs(dataset)
    for i, cell in enumerate(sub.cells):
        _check_cell_in_dataset(ctx, i, cell, configs, sub.dataset.suite)
    rows = _read_bounded(ctx, folder, card, sub, policy)

    by_config: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_config[r["config"]].append(r)
    declared = {c.config for c in sub.cells}
    for config in sorted(set(by_config) - declared):
        raise ctx.pfail(f"predictions for config {config!r}, which no cell declares", "config")

    unlearning = _read_unlearning(ctx, folder, card, sub, policy)
    retain_preds: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in [] if unlearning is None else [r for c in unlearning.configs
                                            for r in unlearning.predictions[c]]:  # fmt: skip
        retain_preds[r["config"]].append(r)

    for i, cell in enumerate(sub.cells):
        if cell.config not in by_config:
            raise ctx.fail("no predictions for this cell", f"cells[{i}].config")
        # Same probe order as the evaluator (group, id): the bootstrap resamples in that order.
        probes = sorted(load_probes(dataset, cell.config), key=lambda p: (int(p["group"]), p["id"]))
        for key in ("kind", "level"):
            actual = {str(p[key]) for p in probes}
            if actual and actual != {getattr(cell, key)}:
                raise ctx.fail(
                    f"the dataset's probes have {key} {sorted(actual)}", f"cells[{i}].{key}"
                )
        fresh = rescore(ctx, cell.config, probes, by_config[cell.config])
        try:
            recomputed = compute_metrics(
                probes, fresh, kind=cell.kind, seed=policy.bootstrap_seed, n_boot=policy.n_boot
            )
        except KsmithError as e:
            raise ctx.pfail(f"{cell.config}: {e}", "probe_id") from e
        recomputed.update(_unlearning_metrics(ctx, i, cell, probes, fresh, unlearning, policy))
        compare_metrics(ctx, i, cell, recomputed)
    log.info("verified submission %s: %d cells", sub.id, len(sub.cells))
    return Verified(sub, folder, tuple(configs), checks.predictions_digest(rows))


def submission_folders(submissions_dir: str | Path) -> list[Path]:
    """Every submission folder under `submissions_dir` (hidden temporary folders skipped)."""
    root = Path(submissions_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def verify_all(
    folders: Sequence[str | Path],
    resolver: DatasetResolver,
    *,
    board_dir: str | Path | None = None,
    policy: BoardPolicy = DEFAULT_POLICY,
) -> list[Submission]:
    """Verify every folder; raise one error listing every failure. `board_dir` (the
    submissions folder) guards ids: a folder outside it may not reuse an id on the board."""
    return [v.submission for v in verify_folders(folders, resolver, board_dir, policy)]


def _board_digests(board: Mapping[str, Path], skip: set[Path]) -> dict[str, str]:
    """Predictions digest -> id of the board's submissions not being verified now, so that a
    new submission copying one of them is caught (a board file that cannot be read is left to
    its own verification)."""
    out = {}
    for sid, folder in sorted(board.items()):
        path = folder / PREDICTIONS_FILE
        if folder in skip or path.is_symlink() or not path.is_file():
            continue
        try:
            out.setdefault(checks.predictions_digest(read_predictions(path)), sid)
        except SpecError:
            continue
    return out


def verify_folders(
    folders: Sequence[str | Path],
    resolver: DatasetResolver,
    board_dir: str | Path | None = None,
    policy: BoardPolicy = DEFAULT_POLICY,
) -> list[Verified]:
    """`verify_all` with what the board needs besides the submissions (coverage). A
    submission whose predictions equal an earlier one's (by id order) is a duplicate."""
    from tqdm.auto import tqdm

    board_ids: dict[str, Path] = {}
    if board_dir is not None:
        board_ids = {p.name: p.resolve() for p in submission_folders(board_dir)}
    errors: list[str] = []
    out: list[Verified] = []
    seen: dict[str, Path] = {}
    todo = [Path(f) for f in folders]
    digests = _board_digests(board_ids, {f.resolve() for f in todo})
    for folder in tqdm(todo, desc="verify", unit="submission", leave=False, disable=not todo):
        try:
            v = _verify(folder, resolver, policy)
        except KsmithError as e:
            errors.append(str(e))
            continue
        sub = v.submission
        other = seen.get(sub.id) or board_ids.get(sub.id)
        if other is not None and other != folder.resolve():
            errors.append(str(_Ctx(sub.id, folder).fail(f"id already used by {other}", "id")))
            continue
        twin = digests.get(v.digest)
        if twin is not None:
            msg = f"its predictions are those of submission '{twin}': a duplicate"
            errors.append(str(_Ctx(sub.id, folder).pfail(msg, "prediction")))
            continue
        seen[sub.id] = folder.resolve()
        digests[v.digest] = sub.id
        out.append(v)
    if errors:
        raise KsmithError(f"{len(errors)} submission(s) failed verification:\n" + "\n".join(errors))
    return out
