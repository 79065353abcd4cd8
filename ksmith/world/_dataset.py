"""Private readers of a dataset folder (docs/contracts.md, sections 1 and 3).

Stand-ins for ``ksmith.data.load_corpus / load_probes / list_configs / read_card``: the world
model needs only these four, so they are kept small and swappable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from ksmith.errors import KsmithError

CORPUS_CONFIG = "corpus"


def _require_dir(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise KsmithError(f"{root}: dataset folder not found")
    return root


def load_corpus(root: str | Path) -> list[str]:
    """The training lines of ``data/corpus/train.parquet``, in file order."""
    path = _require_dir(root) / "data" / CORPUS_CONFIG / "train.parquet"
    if not path.exists():
        raise KsmithError(f"{path}: no corpus (is this a ksmith dataset folder?)")
    table = pq.read_table(path)
    if "text" not in table.column_names:
        raise KsmithError(f"{path}: missing column 'text'")
    return [str(t) for t in table.column("text").to_pylist()]


def list_configs(root: str | Path) -> list[str]:
    """Probe config names (folders of ``data/`` holding a ``test.parquet``), sorted."""
    data = _require_dir(root) / "data"
    if not data.is_dir():
        return []
    return sorted(
        p.name for p in data.iterdir() if p.name != CORPUS_CONFIG and (p / "test.parquet").exists()
    )


def load_probes(root: str | Path, config: str) -> list[dict[str, Any]]:
    """The probe rows of one config, as dicts."""
    path = _require_dir(root) / "data" / config / "test.parquet"
    if not path.exists():
        raise KsmithError(f"{path}: no such probe config {config!r}")
    return pq.read_table(path).to_pylist()


def read_card(root: str | Path) -> dict[str, Any]:
    """The YAML front matter of the dataset card ``README.md`` ({} when absent)."""
    path = _require_dir(root) / "README.md"
    if not path.exists():
        return {}
    text = path.read_text()
    if not text.startswith("---"):
        return {}
    _, front, _rest = (text.split("---", 2) + ["", ""])[:3]
    try:
        meta = yaml.safe_load(front)
    except yaml.YAMLError as e:
        raise KsmithError(f"{path}: front matter is not valid YAML: {e}") from e
    return meta if isinstance(meta, dict) else {}
