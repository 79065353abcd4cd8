"""The re-execution audit's updated models (`ksmith.leaderboard.audit`): an update carried as
artifacts is checked against the claim; a claimed update without artifacts is run again with the
claimed method, parameters and seed, and a trained editor (SERAC, MEND) is found by the content
the submission records, or trained again and checked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ksmith.errors import KsmithError
from ksmith.io import canonical_json
from ksmith.leaderboard.schema import SUBMISSION_FILE, Submission
from ksmith.leaderboard.verify import SubmissionError
from ksmith.pipeline.params import as_overrides

log = logging.getLogger(__name__)


class NotReexecutable(KsmithError):
    """This submission cannot be re-executed here (the reason is the message)."""


def claimed_params(sub: Submission, config: str) -> dict[str, Any]:
    cell = next(c for c in sub.cells if c.config == config)
    return {**sub.method.params, **cell.params}


def _same(a: Any, b: Any) -> bool:
    return canonical_json(a) == canonical_json(b)


def check_artifact(sub: Submission, folder: Path, udir: Path, config: str) -> None:
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
        "params": (info.get("params"), claimed_params(sub, config)),
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


def trained_editor(
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
    paths = {str(p["editor_path"]) for c in sub.cells for p in [claimed_params(sub, c.config)]
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
    try:
        train_editor(name, dataset, model, out, overrides=as_overrides(claimed.training),
                     progress=False)  # fmt: skip
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


def rerun(
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

    claimed = claimed_params(sub, config)
    if editor is not None:
        claimed = {**claimed, "editor_path": str(editor)}
    run = UpdateRun(
        model=str(model), dataset=str(dataset), config=config, method=sub.method.name,
        out=str(out), overrides=as_overrides(claimed), mode=sub.method.mode, groups=tuple(sorted(groups)),
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
