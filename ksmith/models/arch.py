"""Module paths that update methods need, keyed by ``config.model_type``.

Never sniffed from model names: the table is the single source of truth. Paths are dotted
attribute paths; ``{i}`` is the layer index.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ksmith.errors import KsmithError


@dataclass(frozen=True)
class ArchSpec:
    """Where things live inside one architecture family."""

    layers: str  # the ModuleList of transformer blocks
    mlp_in: str  # MLP input (up) projection, relative to a block
    mlp_out: str  # MLP output (down) projection, relative to a block: ROME/MEMIT edit this
    attn_out: str  # attention output projection, relative to a block
    embed: str  # token embedding
    final_norm: str  # norm before the LM head
    lm_head: str
    # GPT-2's Conv1D stores weight as (in_features, out_features); nn.Linear as (out, in).
    conv1d: bool = False
    mlp: str = "mlp"  # the position-wise MLP, relative to a block


_LLAMA_LIKE = ArchSpec(
    layers="model.layers",
    mlp_in="mlp.up_proj",
    mlp_out="mlp.down_proj",
    attn_out="self_attn.o_proj",
    embed="model.embed_tokens",
    final_norm="model.norm",
    lm_head="lm_head",
)

ARCHITECTURES: dict[str, ArchSpec] = {
    "gpt2": ArchSpec(
        layers="transformer.h",
        mlp_in="mlp.c_fc",
        mlp_out="mlp.c_proj",
        attn_out="attn.c_proj",
        embed="transformer.wte",
        final_norm="transformer.ln_f",
        lm_head="lm_head",
        conv1d=True,
    ),
    "llama": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gpt_neox": ArchSpec(
        layers="gpt_neox.layers",
        mlp_in="mlp.dense_h_to_4h",
        mlp_out="mlp.dense_4h_to_h",
        attn_out="attention.dense",
        embed="gpt_neox.embed_in",
        final_norm="gpt_neox.final_layer_norm",
        lm_head="embed_out",
    ),
}


def arch_of(model: torch.nn.Module) -> ArchSpec:
    """The ArchSpec for a transformers model, or a clear error listing the supported types."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise KsmithError(
            f"unsupported architecture model_type={model_type!r}; supported: {supported}"
        )
    return ARCHITECTURES[model_type]


def get_module(root: torch.nn.Module, path: str) -> torch.nn.Module:
    """Follow a dotted path (``model.layers.3.mlp.down_proj``) from `root`."""
    mod = root
    for part in path.split("."):
        mod = mod[int(part)] if part.isdigit() else getattr(mod, part)  # type: ignore[index]
    return mod


def num_layers(model: torch.nn.Module) -> int:
    return len(get_module(model, arch_of(model).layers))  # type: ignore[arg-type]


def layer_path(model: torch.nn.Module, layer: int, which: str) -> str:
    """Full dotted path of a block's sub-module: ``which`` is an ArchSpec field name
    (``"mlp_out"``, ``"mlp_in"``, ``"attn_out"``, ``"mlp"``) or ``""`` for the block itself."""
    spec = arch_of(model)
    n = num_layers(model)
    if not -n <= layer < n:
        raise KsmithError(f"layer {layer} out of range: the model has {n} layers")
    layer %= n
    base = f"{spec.layers}.{layer}"
    return f"{base}.{getattr(spec, which)}" if which else base


def linear_weight_out_in(module: torch.nn.Module, spec: ArchSpec) -> torch.Tensor:
    """The weight as an (out_features, in_features) view, whatever the storage convention.

    For GPT-2 Conv1D this is a transposed view of the parameter, so in-place updates on the
    returned tensor write through to the model.
    """
    w = module.weight  # type: ignore[union-attr]
    return w.T if spec.conv1d else w
