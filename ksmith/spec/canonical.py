"""Canonical text of a spec and its fingerprint (used for dataset fingerprints).

The canonical form is YAML of the fully resolved model (defaults included, keys sorted), so two
files that differ only in layout, key order or comments have one fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel


def _plain(spec: BaseModel | Mapping[str, Any]) -> Any:
    if isinstance(spec, BaseModel):
        return spec.model_dump(mode="json")
    return json.loads(json.dumps(spec, sort_keys=True, default=str))


def canonical_yaml(spec: BaseModel | Mapping[str, Any]) -> str:
    """Stable YAML text of a spec: sorted keys, block style, no line wrapping."""
    return yaml.safe_dump(
        _plain(spec), sort_keys=True, default_flow_style=False, allow_unicode=True, width=10**9
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
