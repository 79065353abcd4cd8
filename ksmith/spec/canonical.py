"""Canonical text of a spec and its fingerprint (used for dataset fingerprints).

The canonical form is YAML of the fully resolved model (defaults included, keys sorted), so two
files that differ only in layout, key order or comments have one fingerprint. The exception are
mappings whose order the world depends on: a model names them in its ``ORDERED_FIELDS`` (a graph
spec's `relations` and `value_types`, drawn in declaration order); they keep their declared
order, so reordering them changes the fingerprint, as it changes the world, and a dataset's
``spec.yaml`` rebuilds exactly the world it was generated from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel


def _plain(obj: Any) -> Any:
    """JSON-able data with every mapping's keys sorted, except the `ORDERED_FIELDS` of models."""
    return _walk(obj, _json(obj), False)


def _json(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, Mapping):
        return {str(k): _json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json(v) for v in obj]
    return json.loads(json.dumps(obj, default=str))


def _walk(live: Any, data: Any, keep_order: bool) -> Any:
    """`data` (the JSON form of `live`) with mapping keys sorted; `live` tells which mappings
    are a model's ordered fields, at any depth."""
    if isinstance(data, dict):
        ordered: frozenset[str] = frozenset()
        if isinstance(live, BaseModel):
            ordered = getattr(type(live), "ORDERED_FIELDS", frozenset())
        keys = list(data) if keep_order else sorted(data)
        return {k: _walk(_child(live, k), data[k], k in ordered) for k in keys}
    if isinstance(data, list):
        items = list(live) if isinstance(live, (list, tuple)) else [None] * len(data)
        return [_walk(v, d, False) for v, d in zip(items, data, strict=False)]
    return data


def _child(live: Any, key: str) -> Any:
    if isinstance(live, BaseModel):
        return getattr(live, key, None)
    if isinstance(live, Mapping):
        return live.get(key)
    return None


def canonical_yaml(spec: BaseModel | Mapping[str, Any]) -> str:
    """Stable YAML text of a spec: sorted keys (but `ORDERED_FIELDS`), block style, no line
    wrapping."""
    return yaml.safe_dump(
        _plain(spec), sort_keys=False, default_flow_style=False, allow_unicode=True, width=10**9
    )


def spec_fingerprint(
    spec: BaseModel | Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> str:
    """sha256 hex of the canonical spec plus `extra` (e.g. generator format version and seed)."""
    h = hashlib.sha256()
    h.update(canonical_yaml(spec).encode("utf-8"))
    h.update(b"\n--\n")
    h.update(json.dumps(dict(extra or {}), sort_keys=True, default=str).encode("utf-8"))
    return h.hexdigest()
