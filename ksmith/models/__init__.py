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

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "arch_of",
    "get_module",
    "layer_path",
    "linear_weight_out_in",
    "num_layers",
]
