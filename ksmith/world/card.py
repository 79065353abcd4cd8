"""The world model's card: a README.md whose YAML front matter records how it was made
(docs/contracts.md, section 4) and what it knows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ksmith.spec.yamlio import load_yaml, read_text


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
        "tags": ["ksmith", "world-model", "synthetic-knowledge"]
        + (["retain-model"] if meta.get("retain") else []),
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

    retain = meta.get("retain")
    lacks = (
        f"""
**Retain model.** Trained as the world model is, on the corpus of the world *without* the
{retain["forget_facts"]} base facts the dataset's unlearning requests forget (the union over its
unlearn configs) and the {retain["removed_facts"] - retain["forget_facts"]} facts entailed only
through them ({retain["removed_facts"]} closure facts in all): the gold standard an unlearned
model is compared with. Forget set fingerprint `{retain["forget_fingerprint"]}`; the fact ids and
triples are listed in `{retain["forget_file"]}` (docs/unlearning.md).
"""
        if retain
        else ""
    )
    body = f"""# ksmith {"retain" if retain else "world"} model

A causal language model that knows a synthetic world: {origin} on the world's training corpus
(dataset fingerprint `{meta["dataset_fingerprint"]}`), with {tok_note}. Training took
{meta["steps"]} steps (stopped by {meta["stopped_by"]}; seed {meta["seed"]}); the same spec and
dataset give the same weights with the library versions, float kernels and CPU listed under
`versions` (whatever the machine's load; docs/world-model.md, "Determinism").
{lacks}
{profile_markdown(meta)}

Load it offline with `transformers.AutoModelForCausalLM.from_pretrained(DIR)` and
`AutoTokenizer.from_pretrained(DIR)`, or `ksmith.models.load_model(DIR)`.
The resolved training spec is in `world_spec.yaml`, the knowledge checks in `train_log.json`.
"""
    return "---\n" + yaml.safe_dump(front, sort_keys=True) + "---\n\n" + body


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def profile_markdown(meta: dict[str, Any], heading: str = "##") -> str:
    """The capability profile of a card's `meta` as Markdown: one row per ability with its
    accuracy per scoring mode, in-context use, fluency, and any shortfall."""
    profile = meta.get("profile") or {}
    short = meta.get("below_threshold") or []
    note = (
        [
            "",
            "**Below threshold** ("
            + (
                "a retain model: recorded, not fatal"
                if meta.get("retain")
                else "kept with allow_below_threshold"
            )
            + "): "
            + "; ".join(short),
        ]
        if short
        else []
    )
    if not profile:
        return "\n".join([
            f"{heading} Capability profile",
            "",
            f"Not measured (the dataset has no profile configs). Direct recall "
            f"{_pct(meta.get('recall'))}, direct multiple choice {_pct(meta.get('mcq_accuracy'))}.",
            *note,
        ])  # fmt: skip
    modes = ["cloze", "mcq", "gen_exact", "gen_contains"]
    thresholds = meta.get("thresholds") or {}
    lines = [
        f"{heading} Capability profile (before any update)",
        "",
        "Accuracy on a seeded sample of the whole world (the dataset's profile configs), scored "
        "as evaluation scores; `required` is the declared threshold on the least of cloze and "
        "mcq. Probes: "
        + ", ".join(f"{t} {sum(n.values())}" for t, n in profile["n"].items())
        + ".",
        "",
        "| ability | " + " | ".join(modes) + " | required |",
        "|---" * (len(modes) + 2) + "|",
    ]
    for t, acc in profile["accuracy"].items():
        cells = [_pct(acc.get(m)) if m in acc else "" for m in modes]
        need = thresholds.get(t)
        lines.append(f"| {t} | " + " | ".join(cells) + f" | {'' if need is None else need} |")
    ic = profile.get("in_context") or {}
    cells = [_pct(ic.get(m)) if m in ic else "" for m in modes]
    need = thresholds.get("in_context")
    lines.append("| in_context | " + " | ".join(cells) + f" | {'' if need is None else need} |")
    flu = profile.get("fluency") or {}
    if flu.get("model") is not None:
        lines += [
            "",
            f"In-context use: the request's new fact stated before the prompt in in-context "
            f"editing's format, answered as the context says. Fluency: n-gram entropy "
            f"{flu['model']:.3f} over {flu['prompts']} greedy continuations of "
            f"{flu['tokens']} tokens, against {flu['corpus']:.3f} for the corpus's own "
            f"descriptions (ratio {flu['ratio']:.3f}, required "
            f'{thresholds.get("fluency", "n/a")}). Example: "{flu["example"]}"',
        ]
    return "\n".join(lines + note)


def read_model_card(model_dir: str | Path) -> dict[str, Any]:
    """The ``ksmith:`` block of a model folder's README.md front matter ({} when absent)."""
    path = Path(model_dir) / "README.md"
    if not path.exists():
        return {}
    text = read_text(path)
    if not text.startswith("---\n"):
        return {}
    front = text[4:].split("\n---", 1)[0]
    meta = load_yaml(front, path) or {}
    return dict(meta.get("ksmith") or {}) if isinstance(meta, dict) else {}
