"""Updates that are not weight changes: memories attached to a model by forward hooks.

Some editors add a component instead of changing weights: GRACE's codebook of keys, values and
deferral radii beside one layer (grace.py), WISE's side memory. Such a component is an
*attachment*: it lives outside the model's parameters (so the model's `named_parameters`, and
hence the runner's delta, stay those of the base model), acts through forward hooks, and is
saved as a folder of its own beside the group's delta:

    g<i>/attach/<j>/attachment.json    {"kind": <registered kind>, ...}   what loads it
    g<i>/attach/<j>/tensors.safetensors

`ATTACHMENTS` maps a kind to its class; ``cls.load(model, folder)`` re-attaches a saved one to a
freshly loaded base model (``artifacts.applied_update`` does, so ``ksmith evaluate`` scores the
edited model). While attached, an attachment is listed by `attached(model)`; the runner saves
and detaches every one after each group.
"""

from __future__ import annotations

import json
import weakref
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch

from ksmith.errors import KsmithError
from ksmith.registry import Registry

ATTACH_DIR = "attach"
ATTACH_JSON = "attachment.json"
TENSORS_FILE = "tensors.safetensors"

# model -> its live attachments (weak keys: a dropped model drops its attachments).
_LIVE: weakref.WeakKeyDictionary[torch.nn.Module, list[Attachment]] = weakref.WeakKeyDictionary()


class Attachment(ABC):
    """A hook-based component on one model. Subclasses set `kind` and register the class with
    ``@ATTACHMENTS.register(kind)``."""

    kind: ClassVar[str]

    def __init__(self, model: torch.nn.Module):
        self._model = weakref.ref(model)
        self._handles: list[Any] = []

    @property
    def model(self) -> torch.nn.Module:
        model = self._model()
        if model is None:
            raise KsmithError(f"{self.kind}: the model this attachment was on is gone")
        return model

    def hook(self, module: torch.nn.Module, fn, *, with_kwargs: bool = False) -> None:
        """Register `fn` as a forward hook of `module` (``fn(module, args, kwargs, output)``
        with `with_kwargs`), removed by `detach`."""
        self._handles.append(module.register_forward_hook(fn, with_kwargs=with_kwargs))
        live = _LIVE.setdefault(self.model, [])
        if self not in live:
            live.append(self)
        _guard_saving(self.model)

    def detach(self) -> None:
        """Remove the hooks; the model computes as without the attachment."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        model = self._model()
        if model is not None and self in _LIVE.get(model, []):
            _LIVE[model].remove(self)
            if not _LIVE[model] and "save_pretrained" in model.__dict__:
                del model.save_pretrained  # the class's method again

    @abstractmethod
    def num_parameters(self) -> int:
        """Numbers the attachment stores (its share of the update's cost)."""

    @abstractmethod
    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(JSON-serialisable metadata, tensors) that `load` rebuilds the attachment from."""

    @classmethod
    @abstractmethod
    def from_state(
        cls, model: torch.nn.Module, meta: dict[str, Any], tensors: dict[str, torch.Tensor]
    ) -> Attachment:
        """Rebuild and attach to `model`."""

    def save(self, folder: str | Path) -> None:
        from ksmith.io import save_safetensors

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta, tensors = self.state()
        tensors = {n: t.detach().to("cpu").contiguous() for n, t in tensors.items()}
        for n, t in tensors.items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise KsmithError(
                    f"{self.kind}: non-finite values in its {n} (the edit diverged; try a "
                    "smaller learning rate); nothing was written"
                )
        save_safetensors(tensors, folder / TENSORS_FILE, metadata={"format": "ksmith-attachment"})
        (folder / ATTACH_JSON).write_text(
            json.dumps({"kind": self.kind, **meta}, indent=2, sort_keys=True) + "\n"
        )


def _guard_saving(model: torch.nn.Module) -> None:
    """While attached, ``model.save_pretrained`` raises: it would write the weights without the
    hooks, a folder that looks like the edited model but is not (vLLM scoring, export-model)."""
    if "save_pretrained" in model.__dict__:
        return

    def refuse(*_args, **_kwargs):
        kinds = sorted({a.kind for a in attached(model)})
        raise KsmithError(
            f"this model carries a {', '.join(kinds)} memory attached by forward hooks, which "
            "save_pretrained cannot store; score it in this process (the hf backend of ksmith "
            "evaluate), not from a saved copy"
        )

    model.save_pretrained = refuse


ATTACHMENTS: Registry[type[Attachment]] = Registry(
    "attachment", entry_point_group="ksmith.attachments"
)


def attached(model: torch.nn.Module) -> list[Attachment]:
    """The attachments currently on `model`, in the order they were attached."""
    return list(_LIVE.get(model, []))


def detach_all(model: torch.nn.Module) -> None:
    for a in attached(model):
        a.detach()


def save_all(model: torch.nn.Module, group_dir: str | Path) -> int:
    """Save every attachment of `model` under ``group_dir/attach/<j>/``; returns the number of
    stored values (0 when there is none, and then nothing is written)."""
    total = 0
    for j, a in enumerate(attached(model)):
        a.save(Path(group_dir) / ATTACH_DIR / str(j))
        total += a.num_parameters()
    return total


def load_all(model: torch.nn.Module, group_dir: str | Path) -> list[Attachment]:
    """Re-attach the attachments saved under ``group_dir/attach/`` to `model` (none: [])."""
    from safetensors.torch import load_file

    from ksmith.methods import load_builtin_methods

    root = Path(group_dir) / ATTACH_DIR
    if not root.is_dir():
        return []
    load_builtin_methods()  # the built-in attachment kinds register with their methods
    out: list[Attachment] = []
    try:
        for folder in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: int(p.name)):
            try:
                meta = json.loads((folder / ATTACH_JSON).read_text())
                tensors = load_file(str(folder / TENSORS_FILE))
            except (OSError, ValueError) as e:
                raise KsmithError(f"{folder}: cannot read the attachment: {e}") from e
            for n, t in tensors.items():
                if t.is_floating_point() and not torch.isfinite(t).all():
                    raise KsmithError(f"{folder}/{n}: non-finite values in the attachment")
            kind = meta.pop("kind", None)
            cls = ATTACHMENTS.get(str(kind))
            out.append(cls.from_state(model, meta, tensors))
    except BaseException:
        for a in out:
            a.detach()
        raise
    return out
