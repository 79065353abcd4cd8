"""Model loading and the architecture table.

Names load on first use (torch and transformers come with them), so importing the package, as
the CLI does to register ``export-model``, stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    **dict.fromkeys(
        (
            "ARCHITECTURES",
            "ArchSpec",
            "arch_of",
            "get_module",
            "layer_path",
            "linear_weight_out_in",
            "num_layers",
        ),
        "ksmith.models.arch",
    ),
    **dict.fromkeys(
        (
            "ALLOW_DOWNLOAD_ENV",
            "check_architecture",
            "downloads_allowed",
            "ensure_pad_token",
            "load_model",
            "model_fingerprint",
            "resolve_device",
        ),
        "ksmith.models.loading",
    ),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ksmith.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
