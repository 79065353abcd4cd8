"""The world model's card: a README.md whose YAML front matter records how it was made
(docs/contracts.md, section 4) and what it knows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ksmith.errors import KsmithError


def tokenizer_kind(tokenizer: Any) -> str:
    """``word``, ``bpe``, ``unigram`` or ``wordpiece``: the tokenizer's model family."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    name = type(getattr(backend, "model", None)).__name__.lower()
    return {"wordlevel": "word", "bpe": "bpe", "unigram": "unigram", "wordpiece": "wordpiece"}.get(
        name, "unknown"
    )


def render_card(meta: dict[str, Any]) -> str:
    """README.md text: front matter (``ksmith:`` = `meta`) and a short human description."""
    front = {
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["ksmith", "world-model", "synthetic-knowledge"],
        "ksmith": meta,
    }
    origin = (
        f"fine-tuned from `{meta['base']}`"
        if meta.get("base")
        else f"trained from scratch ({meta['arch']}, {meta['layers']} layers, "
        f"width {meta['hidden']})"
    )
    tok_note = (
        "a word-level tokenizer (one token per word or punctuation mark, vocabulary from the "
        "corpus and the probes: a synthetic world has a closed vocabulary, so sequences are "
        "exact and short, and an answer tokenizes the same wherever it appears)"
        if meta["tokenizer"] == "word"
        else f"a {meta['tokenizer']} tokenizer"
    )

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    body = f"""# ksmith world model

A causal language model that knows a synthetic world: {origin} on the world's training corpus
(dataset fingerprint `{meta["dataset_fingerprint"]}`), with {tok_note}.

Before any update it recalls {pct(meta["recall"])} of the world's direct facts (cloze, greedy,
{meta["recall_probes"]} distinct probes) and answers {pct(meta["mcq_accuracy"])} of the direct
multiple-choice probes ({meta["mcq_probes"]}). Training took {meta["steps"]} steps,
{meta["train_seconds"]:.0f} s (seed {meta["seed"]}).

Load it offline with `transformers.AutoModelForCausalLM.from_pretrained(DIR)` and
`AutoTokenizer.from_pretrained(DIR)`, or `ksmith.models.load_model(DIR)`.
The resolved training spec is in `world_spec.yaml`, the recall curve in `train_log.json`.
"""
    return "---\n" + yaml.safe_dump(front, sort_keys=True) + "---\n\n" + body


def read_model_card(model_dir: str | Path) -> dict[str, Any]:
    """The ``ksmith:`` block of a model folder's README.md front matter ({} when absent)."""
    path = Path(model_dir) / "README.md"
    if not path.exists():
        return {}
    text = path.read_text()
    if not text.startswith("---\n"):
        return {}
    front = text[4:].split("\n---", 1)[0]
    try:
        meta = yaml.safe_load(front) or {}
    except yaml.YAMLError as e:
        raise KsmithError(f"{path}: front matter is not valid YAML: {e}") from e
    return dict(meta.get("ksmith") or {}) if isinstance(meta, dict) else {}
