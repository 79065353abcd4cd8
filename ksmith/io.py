"""Atomic, non-destructive output.

Every command that writes a folder writes it into a temporary sibling and renames it into place
at the end, so a run killed part-way leaves the previous output or none. A folder is replaced
only if ksmith made it (it holds the marker file `.ksmith-output`); anything else at the target
path is the user's and is never overwritten.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ksmith.errors import KsmithError

MARKER = ".ksmith-output"


def _check_replaceable(out: Path) -> None:
    if not out.exists():
        return
    if out.is_dir() and ((out / MARKER).exists() or not any(out.iterdir())):
        return
    raise KsmithError(
        f"{out}: exists and was not written by ksmith (no {MARKER} marker); "
        "refusing to overwrite it. Choose another --out or remove it yourself."
    )


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, kind: str = "output") -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it replaces `out` in one rename.

    On any exception the temporary folder is removed and `out` is left as it was.
    """
    out = Path(out)
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        (tmp / MARKER).write_text(json.dumps({"kind": kind}) + "\n")
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a single file atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    """Canonical JSON (sorted keys, 2-space indent, trailing newline), written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def safetensors_bytes(tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file's bytes, the same for the same tensors and metadata in every process.

    ``safetensors`` writes its ``__metadata__`` map in hash order, which can differ from one
    process to the next; here the header is re-serialised with sorted keys (and padded with
    spaces to 8 bytes, as the format allows), so equal inputs give equal files.
    """
    import struct

    from safetensors.torch import save

    raw = save(tensors, metadata=metadata)
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + raw[8 + n :]


def save_safetensors(
    tensors: dict[str, Any], path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Write `tensors` as a safetensors file atomically, byte-identical for equal inputs."""
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata))
