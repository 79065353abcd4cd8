"""Audit records on the board: what `ksmith leaderboard audit` checked, bound to the exact files.

`leaderboard/audits/<submission id>.json` (written by `write_record`) holds an `AuditRecord`;
`ksmith leaderboard build` shows a submission as re-executed only when `matching_record` finds
a record whose digests (submission.yaml, predictions, model and dataset fingerprints) are
those of the files on the board. Kept apart from the audit itself (ksmith.leaderboard.audit),
which needs torch and the evaluator, so the board builds without them.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ksmith.io import file_sha256
from ksmith.leaderboard.schema import SUBMISSION_FILE
from ksmith.leaderboard.verify import Verified

log = logging.getLogger(__name__)

AUDITS_DIR = "audits"


@dataclass(frozen=True)
class AuditRecord:
    """What an audit checked; bound to the submission's exact files by their digests."""

    submission: str
    submission_sha256: str
    predictions_digest: str
    model_fingerprint: str
    dataset_fingerprint: str
    source: str  # "artifacts", "re-run" or "no-update"
    seed: int
    rows: int
    audited: int
    ties: int
    miss_rate: float
    confidence: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def record_path(root: Path, sid: str) -> Path:
    return root / AUDITS_DIR / f"{sid}.json"


def write_record(root: Path, record: AuditRecord) -> Path:
    """Write `audits/<id>.json` atomically (a temporary file renamed into place)."""
    path = record_path(root, record.submission)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record.as_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def matching_record(root: Path, verified: Verified) -> AuditRecord | None:
    """The board's audit record of this submission if it audits these exact files, else None
    (a stale or unreadable record only means the submission is not shown as re-executed)."""
    path = record_path(root, verified.submission.id)
    if path.is_symlink() or not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        record = AuditRecord(**raw)
    except (ValueError, TypeError) as e:
        log.warning("%s: unreadable audit record (%s); not counted", path, e)
        return None
    sub = verified.submission
    current = (
        file_sha256(verified.folder / SUBMISSION_FILE),
        verified.digest,
        str(sub.model.fingerprint),
        sub.dataset.fingerprint,
    )
    recorded = (
        record.submission_sha256,
        record.predictions_digest,
        record.model_fingerprint,
        record.dataset_fingerprint,
    )
    if record.submission != sub.id or recorded != current:
        log.warning("%s: the audit record is for other files; not counted", path)
        return None
    return record
