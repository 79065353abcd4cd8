"""Atomic, non-destructive output.

Every command that writes a folder writes it into a temporary sibling and swaps it into place at
the end, so a run killed at any moment leaves the complete previous output or the complete new
one. Where the system allows it (Linux `renameat2(RENAME_EXCHANGE)`) the swap is one atomic
exchange; elsewhere it is two renames, and a run killed between them leaves the previous folder
under `.<name>.old-<pid>`, which the next run on the same path puts back before anything else.
Each run also removes the temporary folders (`.<name>.tmp-<pid>-*`) that killed runs left behind.

A folder is replaced only if ksmith made it for the same kind of output: the marker file
`.ksmith-output` records the kind (`dataset`, `update`, `evaluation`, ...), so `--out` naming a
dataset in an `update` command is refused, and anything without the marker is the user's and is
never overwritten. A command also refuses an `--out` that is, holds or sits inside one of its
inputs.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ksmith.errors import KsmithError

MARKER = ".ksmith-output"

# Kinds that may replace one another: the same stage output written two ways (the pipeline's
# pretrain stage writes a trained world model, or a pointer to a given model, at one path).
_INTERCHANGEABLE = ({"world-model", "model-pointer"},)

# A temporary or moved-aside folder of an atomic write: `.<name>.tmp-<pid>...`, `.<name>.old-<pid>...`.
LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<what>tmp|old)-(?P<pid>[0-9]+)(?:-.*)?$")


def marker_kind(folder: str | Path) -> str | None:
    """The kind recorded in `folder`'s marker; None without a marker, "" if it names none."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return ""
    return str(data.get("kind", "")) if isinstance(data, dict) else ""


def _compatible(found: str, kind: str) -> bool:
    if found in ("", kind):
        return True  # a marker from before kinds were recorded cannot be told apart
    return any(found in group and kind in group for group in _INTERCHANGEABLE)


def _check_replaceable(out: Path, kind: str) -> None:
    if out.is_symlink():
        raise KsmithError(
            f"{out}: is a symbolic link; refusing to replace it. Choose another --out."
        )
    if not out.exists():
        return
    if not out.is_dir():
        raise KsmithError(f"{out}: exists and is not a folder; refusing to overwrite it.")
    found = marker_kind(out)
    if found is None:
        if not any(out.iterdir()):
            return
        raise KsmithError(
            f"{out}: exists and was not written by ksmith (no {MARKER} marker); "
            "refusing to overwrite it. Choose another --out or remove it yourself."
        )
    if not _compatible(found, kind):
        raise KsmithError(
            f"{out}: is a ksmith {found} folder, and this command writes a {kind}; refusing to "
            "replace it. Choose another --out."
        )


def check_not_input(out: str | Path, inputs: Iterable[str | Path | None]) -> None:
    """Refuse an output folder that is one of the inputs, holds one, or lies inside one."""
    target = Path(out).resolve()
    for item in inputs:
        if item is None:
            continue
        src = Path(item).resolve()
        if target == src or target in src.parents or src in target.parents:
            raise KsmithError(
                f"{out}: is the input {item} (or holds or lies inside it); refusing to write "
                "over an input. Choose another --out."
            )


def pid_alive(pid: int) -> bool:
    """Is process `pid` running (this one included)?"""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_output_dir(out: str | Path) -> None:
    """Undo what a killed run on `out` left: put a previous folder moved aside back in place
    (killed between the two renames) and remove temporary folders of runs no longer alive."""
    out = Path(out)
    parent = out.parent
    if not parent.is_dir():
        return
    for entry in sorted(parent.iterdir()):
        m = LEFTOVER.match(entry.name)
        if not m or m["name"] != out.name or pid_alive(int(m["pid"])):
            continue
        if m["what"] == "old" and not out.exists() and (entry / MARKER).is_file():
            entry.rename(out)  # the previous version, complete: it was renamed whole
            continue
        shutil.rmtree(entry, ignore_errors=True)


def _exchange_fn():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _exchange_fn()
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step; False if the system cannot."""
    if _RENAMEAT2 is None:
        return False
    rc = _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Make `tmp` the folder at `out`; at every moment `out` is the old folder or the new one
    (or, on systems without an atomic exchange, absent with the old one at `.<name>.old-<pid>`,
    which `recover_output_dir` restores)."""
    if not out.exists():
        tmp.rename(out)
        return
    if exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # now the previous version
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    """The process's umask (read from /proc where it can be, without changing it)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output_dir(
    out: str | Path, kind: str = "output", *, inputs: Iterable[str | Path | None] = ()
) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it replaces `out` in one atomic swap.

    `kind` is recorded in the marker and must match the kind of a folder being replaced;
    `inputs` are the command's input paths, which `out` may not be. On any exception the
    temporary folder is removed and `out` is left as it was.
    """
    from ksmith.data.interrupt import raise_if_interrupted  # here: ksmith.data imports this module

    out = Path(out)
    check_not_input(out, inputs)
    recover_output_dir(out)
    _check_replaceable(out, kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the output gets the user's umask
    try:
        yield tmp
        raise_if_interrupted()  # a signal whose exception was dropped: never put in place
        (tmp / MARKER).write_text(json.dumps({"kind": kind}) + "\n")
        _swap_into_place(tmp, out)
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


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    """JSON text with sorted keys: equal for equal data, whatever the dicts' key order."""
    return json.dumps(obj, sort_keys=True)


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


def cache_dir(name: str) -> Path:
    """Where ksmith caches `name` (datasets, models, stats, before): ``$KSMITH_CACHE/<name>``,
    else ``$XDG_CACHE_HOME/ksmith/<name>``, else ``~/.cache/ksmith/<name>``."""
    if os.environ.get("KSMITH_CACHE"):
        return Path(os.environ["KSMITH_CACHE"]).expanduser() / name
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ksmith" / name
