"""A stage's cells as jobs: what each computes, what its output depends on, and the inputs a
worker process loads once.

Keys. A cell's key hashes everything its folder depends on: the run's settings (method,
overrides, mode, seed, device, evaluation options, the paths recorded in its outputs), the
model's fingerprint and the dataset's files, the folders it reads (a trained method's editor,
the update it evaluates, the retain model's evaluation: their bytes), and the code (ksmith's
version and source, the method's code, torch's and transformers' versions, the git revision
written into update.json). A finished cell is reused only under the same key
(`store.CellStore`), by a resumed stage and by the next run of the stage alike.

Inputs. Each worker process (local or Ray) keeps the base model, pristine on the CPU, and the
dataset's card, corpus and recently read rows; a cell gets its own copy of each (a deep copy
of a small model takes milliseconds, reading it again tens of them, and an update method may
change the model it is given). The evaluator takes these loaders through its `Hooks`; the
update command loads through `ksmith.models` and `ksmith.data`, so `_cached_loaders` puts them
there for the duration of one cell and restores the originals after it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import importlib.metadata
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ksmith.pipeline.workers import Job

if TYPE_CHECKING:
    from ksmith.evaluate.runner import EvalOptions
    from ksmith.methods.commands import UpdateRun
    from ksmith.pipeline.matrix import Cell


def digest(obj: Any) -> str:
    """sha256 of canonical JSON."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


BIG_FILE = 64 << 20  # bytes; a larger file (a group's full model) is identified by its stat


def folder_digest(path: str | Path) -> str:
    """sha256 of a folder's files: relative paths and bytes ("" if it does not exist).

    Files over `BIG_FILE` count by size and modification time instead of bytes, so that a
    stage does not read every full-model update before it starts; a copy with a new time only
    costs a recomputed cell."""
    root = Path(path)
    if not root.is_dir():
        return ""
    h = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(file.relative_to(root).as_posix().encode() + b"\0")
        st = file.stat()
        if st.st_size > BIG_FILE:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        else:
            h.update(file.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


@cache
def code_fingerprint() -> dict[str, Any]:
    """The code a cell's output depends on (and records): ksmith's version and sources, torch's
    version and the git revision update.json writes."""
    import torch

    import ksmith
    from ksmith.methods.runner import git_revision

    root = Path(ksmith.__file__).resolve().parent
    h = hashlib.sha256()
    for file in sorted(root.rglob("*.py")):
        h.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes())
    return {
        "ksmith": ksmith.__version__,
        "source": h.hexdigest(),
        "torch": torch.__version__,
        "transformers": importlib.metadata.version("transformers"),
        "git": git_revision(),
    }


def _inputs(model: str, dataset: str | Path) -> dict[str, Any]:
    from ksmith.data import read_card
    from ksmith.models import model_fingerprint

    card = read_card(dataset)
    block = card.get("ksmith", card) if isinstance(card, dict) else {}
    return {
        "model": model_fingerprint(model),
        "dataset": block.get("fingerprint"),
        "dataset_files": _folder_digest_cached(str(Path(dataset).resolve())),
    }


@cache
def _folder_digest_cached(path: str) -> str:
    """`folder_digest` of an input folder that does not change while this process plans."""
    return folder_digest(path)


def update_jobs(
    cells: Sequence[Cell],
    template: UpdateRun,
    out: Path,
    *,
    reads: Sequence[str | Path] = (),
    prefix: str = "",
) -> list[Job]:
    """One job per cell: `template` with the cell's config and seed, written to out/<cell>.

    `reads`: folders the method reads besides the model and dataset (a trained editor), whose
    bytes go into each key; `prefix` starts each job's name (a stage of several methods)."""
    common = {
        "stage": "update",
        "run": dataclasses.asdict(dataclasses.replace(template, out="")),
        "inputs": _inputs(template.model, template.dataset),
        "reads": [folder_digest(path) for path in reads],
        "code": code_fingerprint(),
    }
    jobs = []
    for cell in cells:
        run = dataclasses.replace(template, config=cell.config, seed=cell.seed, out="")
        key = digest({**common, "config": cell.config, "seed": cell.seed})
        target = str(out / cell.cell_id)
        jobs.append(
            Job(prefix + cell.cell_id, update_cell, (run,), cost=cell.scale, out=target, key=key)
        )
    return jobs


def evaluate_jobs(
    cells: Sequence[Cell],
    *,
    model: str,
    dataset: str,
    updates: str | None,
    options: EvalOptions,
    out: Path,
    retain: str | None = None,
    retain_seed: int = 0,
    prefix: str = "",
) -> list[Job]:
    """One job per cell: evaluate the model (with the cell's update, if any) on its config.
    With `retain` (the retain stage's folder), an unlearn cell is also compared with the retain
    model's evaluation of its config, `<retain>/<config>.s<retain_seed>`. `prefix` starts each
    job's name (a stage of several methods)."""
    common = {
        "stage": "evaluate",
        "paths": [model, dataset, updates],
        "options": options.model_dump(mode="json"),
        "inputs": _inputs(model, dataset),
        "code": code_fingerprint(),
    }
    jobs = []
    for cell in cells:
        update = None if updates is None else str(Path(updates) / cell.cell_id)
        ref = None
        if retain is not None and cell.kind == "unlearn":
            ref = str(Path(retain) / f"{cell.config}.s{retain_seed}")
        key = digest(
            {**common, "config": cell.config, "cell": cell.cell_id,
             "update": None if update is None else folder_digest(update),
             "retain": None if ref is None else folder_digest(ref)}
        )  # fmt: skip
        kwargs = {"update": update, "options": options, "retain": ref}
        jobs.append(
            Job(prefix + cell.cell_id, evaluate_cell, (model, dataset, cell.config),
                cost=cell.scale, kwargs=kwargs, out=str(out / cell.cell_id), key=key)
        )  # fmt: skip
    return jobs


# -- the cells, as workers run them ------------------------------------------------------------


def update_cell(run: UpdateRun, *, out: str) -> None:
    """Apply the run's method to its config and write `out` (ksmith update, one cell)."""
    from ksmith.methods.commands import update_from_dataset

    with _cached_loaders():
        update_from_dataset(dataclasses.replace(run, out=out))


def evaluate_cell(
    model: str,
    dataset: str,
    config: str,
    *,
    out: str,
    update: str | None,
    options: EvalOptions,
    retain: str | None = None,
) -> None:
    """Evaluate one cell (ksmith evaluate) with this process's cached inputs."""
    from ksmith.evaluate.runner import default_hooks, evaluate

    hooks = dataclasses.replace(
        default_hooks(),
        load_model=lambda path, device: _CACHE.model(path, device),
        load_probes=lambda path, config: _CACHE.rows("probes", path, config),
        load_requests=lambda path, config: _CACHE.rows("requests", path, config),
        read_card=_CACHE.card,
    )
    with _CACHE.dropped_on_error():
        evaluate(model, dataset, config, out=out, update=update, options=options, hooks=hooks,
                 retain=retain)  # fmt: skip


def _stat(path: Path) -> tuple[Any, ...]:
    """Cheap identity of a file or of a folder's top-level files (name, size, mtime)."""
    if path.is_dir():
        return tuple((p.name, *_stat(p)) for p in sorted(path.iterdir()) if p.is_file())
    st = path.stat()
    return (st.st_size, st.st_mtime_ns)


class _InputCache:
    """This process's base model and dataset reads, keyed by path and file identity."""

    ROWS = 4  # configs' rows kept (a worker mostly sees each config once per stage)

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self._model: tuple[Any, Any, Any] | None = None  # (key, model on CPU, tokenizer)
        self._card: dict[Any, Any] = {}
        self._corpus: dict[Any, list[str]] = {}
        self._rows: OrderedDict[Any, list[dict[str, Any]]] = OrderedDict()

    def model(self, path: str, device: str = "auto", **kwargs: Any) -> tuple[Any, Any]:
        from ksmith.models.loading import resolve_device

        if kwargs:  # another dtype or revision: not what the cache holds
            return _ORIGINAL["load_model"](path, device=device, **kwargs)
        local = Path(path).expanduser()
        key = (os.path.abspath(local), _stat(local)) if local.is_dir() else (str(path),)
        if self._model is None or self._model[0] != key:
            self._model = None  # one model at a time
            model, tokenizer = _ORIGINAL["load_model"](path, device="cpu")
            self._model = (key, model, tokenizer)
        _, model, tokenizer = self._model
        dev = resolve_device(device)
        return copy.deepcopy(model).to(dev).eval(), copy.deepcopy(tokenizer)

    def card(self, dataset: str | Path) -> dict[str, Any]:
        key = self._dataset_key(dataset)
        if key not in self._card:
            self._card[key] = _ORIGINAL["read_card"](dataset)
        return copy.deepcopy(self._card[key])

    def corpus(self, dataset: str | Path) -> list[str]:
        key = self._dataset_key(dataset)
        if key not in self._corpus:
            self._corpus = {key: _ORIGINAL["load_corpus"](dataset)}
        return list(self._corpus[key])  # str are immutable

    def rows(self, what: str, dataset: str | Path, config: str) -> list[dict[str, Any]]:
        key = (what, config, *self._dataset_key(dataset))
        if key in self._rows:
            self._rows.move_to_end(key)
        else:
            self._rows[key] = _ORIGINAL[f"load_{what}"](dataset, config)
            while len(self._rows) > self.ROWS:
                self._rows.popitem(last=False)
        return copy.deepcopy(self._rows[key])

    @staticmethod
    def _dataset_key(dataset: str | Path) -> tuple[Any, ...]:
        card = Path(dataset) / "README.md"
        return (os.path.abspath(dataset), _stat(card) if card.is_file() else None)

    @contextlib.contextmanager
    def dropped_on_error(self) -> Iterator[None]:
        """A cell that failed may have left its copies anywhere: start the next one afresh."""
        try:
            yield
        except BaseException:
            self.clear()
            raise


_CACHE = _InputCache()


def _originals() -> dict[str, Callable[..., Any]]:
    import ksmith.data as data
    import ksmith.models.loading as loading

    return {
        "load_model": loading.load_model,
        "read_card": data.read_card,
        "load_corpus": data.load_corpus,
        "load_probes": data.load_probes,
        "load_requests": data.load_requests,
    }


class _Originals(dict):
    """The real loaders, looked up when first needed (importing them pulls in torch)."""

    def __missing__(self, name: str) -> Callable[..., Any]:
        self.update(_originals())
        return self[name]


_ORIGINAL: dict[str, Callable[..., Any]] = _Originals()


@contextlib.contextmanager
def _cached_loaders() -> Iterator[None]:
    """`ksmith.models.load_model` and `ksmith.data`'s readers served from this process's
    cache during one cell (the update command imports them by name when it runs)."""
    import ksmith.data as data
    import ksmith.models.loading as loading

    _ORIGINAL["load_model"]  # noqa: B018 - resolve the originals before replacing them
    replaced = {
        (loading, "load_model"): _CACHE.model,
        (data, "read_card"): _CACHE.card,
        (data, "load_corpus"): _CACHE.corpus,
        (data, "load_probes"): lambda d, c: _CACHE.rows("probes", d, c),
        (data, "load_requests"): lambda d, c: _CACHE.rows("requests", d, c),
    }
    saved = {target: getattr(*target) for target in replaced}
    for (module, name), fn in replaced.items():
        setattr(module, name, fn)
    try:
        with _CACHE.dropped_on_error():
            yield
    finally:
        for (module, name), fn in saved.items():
            setattr(module, name, fn)
