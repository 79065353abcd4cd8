"""The trained-editor folder: an editor's weights and its card, written by ``ksmith train-editor``.

    EDITOR_DIR/card.json             method, paper, the world model's fingerprint, the training
                                     split's fingerprint and sizes, the training settings, the
                                     training curve (every `log_every` steps) and the held-out
                                     accuracy, ksmith version
    EDITOR_DIR/editor.safetensors    the editor's weights
    EDITOR_DIR/split.json            the training split itself (for inspection)

A method's ``editor_path`` parameter names the folder; `read_editor` refuses one trained for
another method or another world model (the fingerprint of the model differs), so an update
never runs an editor trained on a different model's hidden states or gradients.

A path is only where an editor is on one machine. What identifies it is `editor_identity`: the
SHA-256 of its weights file and the training settings its card records. A submission records
that identity (`method.editor`), and the re-execution audit finds the editor by it, or trains
it again from those settings (training is deterministic) and checks the weights' hash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ksmith.errors import KsmithError

CARD_FILE = "card.json"
WEIGHTS_FILE = "editor.safetensors"
SPLIT_FILE = "split.json"
OUTPUT_KIND = "trained-editor"


def write_editor(
    out: str | Path,
    card: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    split_json: Mapping[str, Any],
    *,
    inputs: tuple[str | Path, ...] = (),
) -> Path:
    """Write the editor folder atomically (`ksmith.io.atomic_output_dir`)."""
    from ksmith import __version__
    from ksmith.io import atomic_output_dir, save_safetensors

    out = Path(out)
    with atomic_output_dir(out, OUTPUT_KIND, inputs=inputs) as tmp:
        weights = {n: t.detach().to("cpu").contiguous() for n, t in tensors.items()}
        for n, t in weights.items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise KsmithError(f"editor weight {n} is not finite (training diverged)")
        save_safetensors(weights, tmp / WEIGHTS_FILE, metadata={"format": "ksmith-editor"})
        full = {**card, "ksmith_version": __version__}
        (tmp / CARD_FILE).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
        (tmp / SPLIT_FILE).write_text(json.dumps(split_json, sort_keys=True, ensure_ascii=False))
    return out


def editor_fingerprint(folder: str | Path) -> str:
    """The SHA-256 of the editor folder's weights file: the editor's identity."""
    from ksmith.io import file_sha256

    return file_sha256(Path(folder) / WEIGHTS_FILE)


def editor_identity(card: Mapping[str, Any], folder: str | Path) -> dict[str, Any]:
    """What a submission records of the editor it ran (`ksmith.leaderboard.schema.EditorInfo`):
    the weights' fingerprint and the card's training settings."""
    return {"fingerprint": editor_fingerprint(folder), "training": dict(card.get("training") or {})}


def read_editor(
    path: str | Path | None, method: str, model_fingerprint: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(card, weights) of the editor folder `path`, checked against `method` and the model.

    `model_fingerprint` is `ksmith.models.model_fingerprint` of the model folder when known,
    else the weights' hash (`ksmith.methods.stats.weights_fingerprint`); the card holds both.
    """
    from safetensors.torch import load_file

    hint = (
        f"train one with `ksmith train-editor --method {method} --dataset DATASET --model MODEL "
        "--out DIR` and pass it with --set editor_path=DIR"
    )
    if not path:
        raise KsmithError(f"{method}: parameter editor_path is not set; {hint}")
    folder = Path(path)
    card_path = folder / CARD_FILE
    if not card_path.is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise KsmithError(f"{method}: editor_path {folder} is not a trained-editor folder; {hint}")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as e:
        raise KsmithError(f"{card_path}: not valid JSON: {e}") from e
    if card.get("method") != method:
        raise KsmithError(
            f"{card_path}: field method is {card.get('method')!r}, this update runs {method!r}"
        )
    model = card.get("model") or {}
    known = {model.get("fingerprint"), model.get("weights_fingerprint")} - {None}
    if model_fingerprint not in known:
        raise KsmithError(
            f"{card_path}: field model.fingerprint: the editor was trained on another world "
            f"model ({model.get('fingerprint')}, at {model.get('path')}), not on this one "
            f"({model_fingerprint}); {hint}"
        )
    try:
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own types
        raise KsmithError(f"{folder / WEIGHTS_FILE}: cannot read the editor weights: {e}") from e
    return card, tensors
