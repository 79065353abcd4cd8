"""CLI: ``ksmith train-editor`` (train SERAC's or MEND's editor on the world's training split)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from ksmith.errors import KsmithError

log = logging.getLogger(__name__)

TRAINED_METHODS = ("serac", "mend")


def _training_settings(
    method: str, overrides: tuple[str, ...], steps: int | None, seed: int | None
):
    from pydantic import ValidationError

    from ksmith.methods.params import parse_override

    if method == "serac":
        from ksmith.methods.serac import SERACTraining as Settings
    elif method == "mend":
        from ksmith.methods.mend import MENDTraining as Settings
    else:
        raise KsmithError(f"--method must be one of {', '.join(TRAINED_METHODS)}, not {method!r}")
    values: dict[str, Any] = dict(parse_override(item) for item in overrides)
    if steps is not None:
        values["steps"] = steps
    if seed is not None:
        values["seed"] = seed
    try:
        return Settings(**values)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        known = ", ".join(sorted(Settings.model_fields))
        raise KsmithError(f"--set {key}: {err['msg']} (training settings: {known})") from e


def train_editor(
    method: str,
    dataset: str | Path,
    model_path: str | Path,
    out: str | Path,
    *,
    overrides: tuple[str, ...] = (),
    steps: int | None = None,
    seed: int | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Train `method`'s editor for the world model at `model_path` on `dataset`'s training
    split and write the editor folder `out` (`ksmith.methods.trained.editor`); returns the card."""
    import torch

    from ksmith.methods import get_method
    from ksmith.methods.stats import weights_fingerprint
    from ksmith.methods.trained.editor import write_editor
    from ksmith.methods.trained.split import build_split
    from ksmith.models import load_model, model_fingerprint, resolve_device

    settings = _training_settings(method, overrides, steps, seed)
    cls = get_method(method)
    split = build_split(
        dataset,
        n_train=settings.n_train,
        n_heldout=settings.n_heldout,
        seed=settings.seed,
        locality=settings.locality,
    )
    model, tokenizer = load_model(str(model_path), device=resolve_device(device))
    model.eval()
    torch.manual_seed(settings.seed)
    start = time.perf_counter()
    if method == "serac":
        from ksmith.methods.trained.serac_train import train_serac

        tensors, curve, heldout = train_serac(model, tokenizer, split, settings, progress=progress)
        extra: dict[str, Any] = {}
    else:
        from ksmith.methods.trained.mend_train import train_mend

        editor, curve, heldout = train_mend(model, tokenizer, split, settings, progress=progress)
        tensors = {k: v.detach().clone() for k, v in editor.state_dict().items()}
        extra = {"editor": editor.config()}
    seconds = time.perf_counter() - start
    card = {
        "method": method,
        "paper": cls.paper,
        "model": {
            "path": str(model_path),
            "fingerprint": model_fingerprint(model_path),
            "weights_fingerprint": weights_fingerprint(model),
            "model_type": model.config.model_type,
        },
        "dataset": {"path": str(dataset), "fingerprint": split.dataset_fingerprint},
        "split": {
            "fingerprint": split.fingerprint,
            "train_edits": len(split.train),
            "heldout_edits": len(split.heldout),
            "train_subjects": len({e.subject for e in split.train}),
            "heldout_subjects": len({e.subject for e in split.heldout}),
            "excluded_subjects": split.excluded_subjects,
            "seed": split.seed,
        },
        "training": settings.model_dump(mode="json"),
        "curve": curve,
        "heldout": heldout,
        **extra,
    }
    # The card holds no wall time, so the same inputs give the same bytes (the pipeline's
    # editors stage then leaves the update stages untouched); the time is logged.
    write_editor(out, card, tensors, split.to_json(), inputs=(dataset, model_path))
    log.info("%s editor trained in %.1fs", method, seconds)
    return card


def _cmd_train_editor(args: argparse.Namespace) -> int:
    card = train_editor(
        args.method,
        args.dataset,
        args.model,
        args.out,
        overrides=tuple(args.set or ()),
        steps=args.steps,
        seed=args.seed,
        device=args.device,
    )
    log.info(
        "wrote %s: %s editor, %d training edits, held-out %s",
        args.out, card["method"], card["split"]["train_edits"], card["heldout"],
    )  # fmt: skip
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train-editor",
        help="train a learned editor (SERAC, MEND) on the world's training split",
        description="Train METHOD's editor for MODEL on edits drawn from DATASET's world on "
        "subjects no evaluated config uses, and write the editor folder (weights, card with "
        "fingerprints, training curve and held-out accuracy). Pass it to `ksmith update` with "
        "--set editor_path=OUT.",
    )
    p.add_argument("--method", required=True, choices=TRAINED_METHODS, help="trained editor")
    p.add_argument("--dataset", required=True, help="dataset folder (ksmith generate)")
    p.add_argument("--model", required=True, help="the world model folder it edits")
    p.add_argument("--out", required=True, help="editor folder to write")
    p.add_argument("--steps", type=int, help="optimizer steps (default: the method's)")
    p.add_argument("--seed", type=int, help="seed of the split, init and batches (default 0)")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="a training setting; repeatable"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    p.set_defaults(func=_cmd_train_editor)
