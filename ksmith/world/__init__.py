"""The world model: a tokenizer and a small causal LM trained on a world's corpus.

Heavy modules (torch, transformers) load on first use of a name, so importing the package
(``ksmith pretrain --help``) stays fast. The command's function is
``ksmith.world.pretrain.pretrain(dataset_dir, out, spec, base=None, device="auto")``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "WorldModelSpec": "ksmith.world.spec",
    "load_world_spec": "ksmith.world.spec",
    "DEFAULT_SPEC": "ksmith.world.spec",
    "train_tokenizer": "ksmith.world.tokenizer",
    "build_model": "ksmith.world.training",
    "train": "ksmith.world.training",
    "TrainResult": "ksmith.world.training",
    "load_world_data": "ksmith.world.pretrain",
    "WorldData": "ksmith.world.pretrain",
    "KnowledgeProbes": "ksmith.world.probes",
    "MCQ": "ksmith.world.probes",
    "collect_probes": "ksmith.world.probes",
    "measure": "ksmith.world.probes",
    "read_model_card": "ksmith.world.card",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ksmith.world' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
