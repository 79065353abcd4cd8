"""Layer indices in method hyper-parameters, checked against the model's depth.

A field named ``layer`` or ``layers``, or ending in ``_layer`` or ``_layers`` (ROME's ``layer``,
MEMIT's and AlphaEdit's ``layers``, RMU's ``layer`` and ``update_layers``, FT's and LoRA's
``layers``, and any plugin's field named alike) holds block indices: ``0 .. n-1``, or negative
from the end (``-n .. -1``), n being ``config.num_hidden_layers``. Anything else is an error that
names the method and the field; an index is never wrapped modulo n (layer 5 of a 2-layer model
is a mistake, not layer 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ksmith.errors import KsmithError, SpecError
from ksmith.methods.base import MethodParams


def is_layer_field(name: str) -> bool:
    return name in ("layer", "layers") or name.endswith(("_layer", "_layers"))


def layer_fields(params: MethodParams) -> dict[str, tuple[int, ...]]:
    """``{field: indices}`` for every layer field set to an int or a sequence of ints."""
    out: dict[str, tuple[int, ...]] = {}
    for name in type(params).model_fields:
        if not is_layer_field(name):
            continue
        value = getattr(params, name)
        if isinstance(value, int) and not isinstance(value, bool):
            out[name] = (value,)
        elif isinstance(value, list | tuple) and all(isinstance(v, int) for v in value):
            out[name] = tuple(value)
    return out


def model_depth(model_or_config: Any) -> int | None:
    """``config.num_hidden_layers`` of a model or a config (None if it declares none)."""
    config = getattr(model_or_config, "config", model_or_config)
    n = getattr(config, "num_hidden_layers", None)
    return n if isinstance(n, int) and n > 0 else None


def check_layers(
    method: str,
    params: MethodParams,
    n_layers: int | None,
    sources: Mapping[str, tuple[str, str]] | None = None,
) -> None:
    """Raise if a layer field of `params` is out of range for an `n_layers`-deep model.

    `sources` maps a field to the (file, field) its value came from (``resolve_param_values``),
    so the error points at the YAML line or ``--set`` to change.
    """
    if n_layers is None:
        return
    for name, values in layer_fields(params).items():
        bad = [v for v in values if not -n_layers <= v < n_layers]
        if not bad:
            continue
        msg = (
            f"method '{method}': {name}={bad[0]} is out of range for a model with "
            f"{n_layers} layers (config.num_hidden_layers); expected 0..{n_layers - 1}, or "
            f"-{n_layers}..-1 counting from the end"
        )
        if sources and name in sources:
            file, field = sources[name]
            raise SpecError(msg, file=file, field=field)
        raise KsmithError(msg)
