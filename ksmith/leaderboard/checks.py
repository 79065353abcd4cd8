"""What `verify` checks before and besides recomputing: the board's own rules (issue 16).

- **Files**: a submission folder holds regular files only (no symbolic links, which could point
  outside the repository), and its sizes and row count are bounded by what the dataset implies,
  read from the file's metadata before any row is loaded (a 10^7-row file is refused at once).
- **Board settings**: the bootstrap that gives the intervals is the board's (`BoardPolicy`), not
  the submitter's choice; a submission declaring other settings is refused.
- **Claims**: the method is a registered method whose own parameter model (`ksmith.methods`)
  accepts the declared parameters, unknown keys rejected; or an external method with a URL.
- **Clean values**: text fields carry no control or bidirectional characters; every aggregate is
  finite; self-reported numbers (cost, fluency, drift, capability) are in their range; per-item
  scores are finite and in their mode's range.
- **Duplicates**: `predictions_digest` identifies a submission's predictions whatever the file's
  encoding, so a copy under another id is refused.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ksmith.leaderboard.schema import PREDICTIONS_FILE, SUBMISSION_FILE, Submission
from ksmith.leaderboard.unlearning import FILES as _UNLEARNING_FILES

# Bidirectional formatting characters (Unicode TR 9): they reorder how a line is displayed.
_BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@dataclass(frozen=True)
class BoardPolicy:
    """Settings the board fixes for every submission."""

    bootstrap_seed: int = 0
    n_boot: int = 1000
    # A row is one (probe, stage, mode): 2 stages x at most 2 modes (qa: gen_exact, gen_contains).
    rows_per_probe: int = 4
    # Bounds on bytes, generous for honest files (a row holds ids and one short prediction).
    bytes_per_row: int = 4096
    yaml_bytes_per_config: int = 256 * 1024
    yaml_bytes_max: int = 32 * 1024 * 1024  # before the dataset is known


DEFAULT_POLICY = BoardPolicy()


def bad_character(text: str) -> str | None:
    """The first control or bidirectional character of `text` (as U+XXXX), or None."""
    for ch in text:
        if ch in _BIDI or unicodedata.category(ch) in ("Cc", "Cs") or ch in "\u2028\u2029":
            return f"U+{ord(ch):04X}"
    return None


def clean_text(text: str) -> str:
    """`text` without control and bidirectional characters (newlines become spaces)."""
    text = text.replace("\n", " ").replace("\r", " ").replace("\t", " ")
    return "".join(c for c in text if bad_character(c) is None)


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(str(k), f"{where}.{k}" if where else str(k))
            yield from _strings(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _strings(v, f"{where}[{i}]")


def check_text(sub: Submission) -> tuple[str, str] | None:
    """(field, message) for the first displayed text field holding a control or bidi
    character (hyper-parameter values are not displayed, and a prompt template may hold a
    newline)."""
    data = sub.model_dump(mode="json")
    data["method"].pop("params")
    for cell in data["cells"]:
        cell.pop("params")
    for field, text in _strings(data, ""):
        bad = bad_character(text)
        if bad is not None:
            return field, f"contains the control or bidirectional character {bad}"
    return None


def regular_files(folder: Path) -> tuple[str, str] | None:
    """(file, message) if the folder or anything in it is a symbolic link or not a regular file."""
    if folder.is_symlink():
        return "", "the submission folder is a symbolic link"
    for entry in sorted(folder.iterdir()):
        mode = os.lstat(entry).st_mode
        if stat.S_ISLNK(mode):
            return entry.name, "is a symbolic link; submissions hold their own files"
        if entry.name in (SUBMISSION_FILE, PREDICTIONS_FILE, *_UNLEARNING_FILES) and not (
            stat.S_ISREG(mode)
        ):
            return entry.name, "is not a regular file"
    return None


def yaml_size_error(path: Path, limit: int) -> str | None:
    size = path.stat().st_size
    return None if size <= limit else f"{size} bytes; at most {limit} expected"


def predictions_bounds_error(path: Path, max_rows: int, policy: BoardPolicy) -> str | None:
    """Row count, file size and uncompressed size against the dataset's bounds, from the
    parquet footer only (bounded memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    max_bytes = max_rows * policy.bytes_per_row + (1 << 20)
    size = path.stat().st_size
    if size > max_bytes:
        return f"{size} bytes; the dataset implies at most {max_bytes}"
    try:
        meta = pq.ParquetFile(path).metadata
    except (pa.ArrowException, OSError) as e:
        return f"not a readable parquet file ({e})"
    if meta.num_rows > max_rows:
        return f"{meta.num_rows} rows; the dataset implies at most {max_rows}"
    raw = sum(
        meta.row_group(g).column(c).total_uncompressed_size
        for g in range(meta.num_row_groups)
        for c in range(meta.num_columns)
    )
    if raw > max_bytes:
        return f"{raw} bytes uncompressed; the dataset implies at most {max_bytes}"
    return None


def max_rows(counts: Mapping[str, Mapping[str, int]], configs: Sequence[str], policy) -> int:
    """Most prediction rows the declared configs can have (the card's probe counts)."""
    return sum(int(counts.get(c, {}).get("probes", 0)) for c in configs) * policy.rows_per_probe


NO_UPDATE = "none"  # `ksmith pipeline evaluate --method none`: the model as it is


def check_method(sub: Submission) -> tuple[str, str] | None:
    """(field, message) if the method is unknown without a URL, or its parameters are not
    accepted by the registered method's own parameter model."""
    from pydantic import ValidationError

    from ksmith.leaderboard.schema import _loc
    from ksmith.methods import METHODS, load_builtin_methods

    load_builtin_methods()
    name = sub.method.name
    if name == NO_UPDATE:  # the no-update baseline: a reference row, with nothing to claim
        bad = next((i for i, c in enumerate(sub.cells) if c.params), None)
        if sub.method.params or bad is not None:
            where = "method.params" if sub.method.params else f"cells[{bad}].params"
            return where, "the no-update baseline 'none' has no parameters"
        return None
    if name not in METHODS:
        if sub.method.url is None:
            known = ", ".join(METHODS.names())
            return "method.name", (
                f"'{name}' is not a registered method (known: {known}); an external method "
                "must give method.url"
            )
        return None  # external: its parameters are its own
    params_model = METHODS.get(name).Params
    for i, cell in enumerate(sub.cells):
        merged = {**sub.method.params, **cell.params}
        try:
            params_model.model_validate(merged)
        except ValidationError as e:
            first = e.errors()[0]
            key = _loc(first["loc"])
            where = f"cells[{i}].params" if key in cell.params else "method.params"
            return f"{where}.{key}", f"{first['msg']} (parameters of method '{name}')"
    return None


# Self-reported metrics: range by registry name (inclusive; None = unbounded).
_SELF_REPORTED_RANGE: dict[str, tuple[float, float | None]] = {
    "cost": (0.0, None),
    "fluency": (0.0, None),
    "drift_kl": (0.0, None),
    "drift_cka": (0.0, 1.0 + 1e-6),
    "capability": (0.0, 1.0 + 1e-6),
}


def metric_value_error(base: str, value: Any) -> str | None:
    """Why an aggregate (or interval end) is not acceptable, or None."""
    if value is None:
        return None
    if not math.isfinite(value):
        return f"{value} is not a finite number"
    lo, hi = _SELF_REPORTED_RANGE.get(base, (None, None))
    if lo is not None and value < lo:
        return f"{value} is below {lo}"
    if hi is not None and value > hi:
        return f"{value} is above {hi}"
    return None


def score_error(mode: str, score: float) -> str | None:
    """Why a per-item score is out of its mode's range: mcq a log-likelihood (<= 0), cloze a
    token accuracy in [0, 1], generation 0 or 1."""
    if not math.isfinite(score):
        return f"score {score} is not finite"
    if mode == "mcq" and score > 0.0:
        return f"score {score}: a log-likelihood is at most 0"
    if mode != "mcq" and not 0.0 <= score <= 1.0:
        return f"score {score} is outside [0, 1]"
    return None


def predictions_digest(rows: Sequence[Mapping[str, Any]]) -> str:
    """sha256 of the (config, probe, stage, mode, prediction) rows in canonical order."""
    h = hashlib.sha256()
    keys = ("config", "probe_id", "stage", "mode", "prediction")
    for r in sorted(tuple(str(r[k]) for k in keys) for r in rows):
        h.update("\x1f".join(r).encode("utf-8") + b"\x1e")
    return h.hexdigest()
