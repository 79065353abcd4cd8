"""Where a method's code lives, and a fingerprint of it.

DVC reruns a stage when one of its declared deps changes. `dvc.yaml` names ``ksmith/methods``
for the built-ins, but a plugin's code lives in its own package, outside the repository. So
``ksmith pipeline code`` writes one small JSON per method, ``out/code/<method>.json``, holding the
sha256 of every source file of the method's package (this function); the update stage lists
``out/code`` as a dep, so a changed plugin reruns the stage. The same record goes into each update
cell's key, so that run computes exactly that method's cells again and reuses the others
(``ksmith.pipeline.store``), and into each update folder's ``update.json`` (``code``), for
provenance.

The files: for a built-in, ``ksmith/methods`` (every ``*.py``); for a plugin, the folder of the
top-level package that defines the class (every ``*.py`` and ``*.yaml``/``*.yml``: code and
shipped defaults), or the single module file and its ``<name>.yaml``. Paths are recorded relative
to that folder, so the record is the same on every machine.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from pathlib import Path
from typing import Any

from ksmith.methods.base import UpdateMethod

_SUFFIXES = (".py", ".yaml", ".yml")


def method_code_files(cls: type[UpdateMethod]) -> tuple[Path, list[Path]]:
    """(root folder, the files under it that make up `cls`'s code), files sorted."""
    module = sys.modules[cls.__module__]
    top = cls.__module__.split(".")[0]
    if top == "ksmith":
        import ksmith.methods

        root = Path(ksmith.methods.__file__).resolve().parent
        return root, sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    package = sys.modules.get(top)
    paths = getattr(package, "__path__", None)
    if package is not None and paths:
        root = Path(next(iter(paths))).resolve()
        files = [
            p
            for p in root.rglob("*")
            if p.suffix in _SUFFIXES and p.is_file() and "__pycache__" not in p.parts
        ]
        return root, sorted(files)
    file = Path(inspect.getsourcefile(module) or module.__file__ or "").resolve()
    files = [file, *(p for p in [file.parent / f"{cls.name}.yaml"] if p.is_file())]
    return file.parent, files


def method_code(cls: type[UpdateMethod]) -> dict[str, Any]:
    """``{"method", "module", "files": {relative path: sha256}, "sha256"}`` for `cls`."""
    root, files = method_code_files(cls)
    digests = {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
    }
    total = hashlib.sha256("".join(f"{k} {v}\n" for k, v in digests.items()).encode())
    return {
        "method": cls.name,
        "module": cls.__module__,
        "sha256": total.hexdigest(),
        "files": digests,
    }
