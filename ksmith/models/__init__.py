"""Model loading and the architecture table."""

from ksmith.models.arch import (
    ARCHITECTURES,
    ArchSpec,
    arch_of,
    get_module,
    layer_path,
    linear_weight_out_in,
    num_layers,
)
from ksmith.models.loading import (
    ALLOW_DOWNLOAD_ENV,
    check_architecture,
    downloads_allowed,
    ensure_pad_token,
    load_model,
    model_fingerprint,
    resolve_device,
)

__all__ = [
    "ALLOW_DOWNLOAD_ENV",
    "ARCHITECTURES",
    "ArchSpec",
    "arch_of",
    "check_architecture",
    "downloads_allowed",
    "ensure_pad_token",
    "get_module",
    "layer_path",
    "linear_weight_out_in",
    "load_model",
    "model_fingerprint",
    "num_layers",
    "resolve_device",
]
