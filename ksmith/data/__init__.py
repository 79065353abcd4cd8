"""Datasets: generate a suite into a Hub-layout folder, read it back, push it to the Hub.

Layout and columns: docs/contracts.md sections 1-3 (`ksmith.data.schema` is their code form).
"""

from ksmith.data.card import read_card
from ksmith.data.readers import (
    list_configs,
    list_profile_configs,
    load_corpus,
    load_probes,
    load_requests,
)
from ksmith.data.schema import (
    CORPUS_SCHEMA,
    FORMAT_VERSION,
    PROBE_COLUMNS,
    PROBE_SCHEMA,
    REQUEST_COLUMNS,
    REQUEST_SCHEMA,
    config_name,
)


def generate_dataset(*args, **kwargs):
    """See `ksmith.data.generate.generate_dataset` (imported lazily: it pulls in the world
    builder)."""
    from ksmith.data.generate import generate_dataset as _generate

    return _generate(*args, **kwargs)


def push_dataset(*args, **kwargs):
    """See `ksmith.data.push.push_dataset`."""
    from ksmith.data.push import push_dataset as _push

    return _push(*args, **kwargs)


__all__ = [
    "CORPUS_SCHEMA",
    "FORMAT_VERSION",
    "PROBE_COLUMNS",
    "PROBE_SCHEMA",
    "REQUEST_COLUMNS",
    "REQUEST_SCHEMA",
    "config_name",
    "generate_dataset",
    "list_configs",
    "list_profile_configs",
    "load_corpus",
    "load_probes",
    "load_requests",
    "push_dataset",
    "read_card",
]
