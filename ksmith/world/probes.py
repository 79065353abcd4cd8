"""What the world model must know before any update, and how well it knows it.

Recall is measured on the dataset's `direct` probes in cloze format (docs/contracts.md,
section 3: correct when every answer token is the greedy choice, teacher-forced), over all
configs with duplicates removed; MCQ accuracy on the `direct` mcq probes (argmax over options
of log p(" " + option | prompt)). Both use `answer_before`: the world as stated.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ksmith.evaluate.backend import Backend


@dataclass(frozen=True)
class MCQ:
    prompt: str
    options: tuple[str, ...]
    gold: int  # index of the correct option


@dataclass(frozen=True)
class KnowledgeProbes:
    """De-duplicated direct probes of a dataset: cloze (prompt, answer) pairs and MCQs."""

    cloze: tuple[tuple[str, str], ...]
    mcq: tuple[MCQ, ...]

    def sample(self, n: int, seed: int) -> KnowledgeProbes:
        """A fixed seeded sample of at most `n` of each kind (n=0: everything)."""
        if n <= 0:
            return self
        rng = random.Random(seed)

        def pick(items: Sequence) -> tuple:
            return tuple(items) if len(items) <= n else tuple(rng.sample(list(items), n))

        return KnowledgeProbes(cloze=pick(self.cloze), mcq=pick(self.mcq))


def collect_probes(rows: Iterable[dict]) -> KnowledgeProbes:
    """Direct cloze and direct mcq probes from probe rows, de-duplicated and sorted."""
    cloze: set[tuple[str, str]] = set()
    mcq: set[MCQ] = set()
    for row in rows:
        if row["type"] != "direct":
            continue
        if row["format"] == "cloze":
            cloze.add((row["prompt"], row["answer_before"]))
        elif row["format"] == "mcq" and row["answer_before"] in row["options"]:
            options = tuple(row["options"])
            mcq.add(MCQ(row["prompt"], options, options.index(row["answer_before"])))
    return KnowledgeProbes(
        cloze=tuple(sorted(cloze)),
        mcq=tuple(sorted(mcq, key=lambda m: (m.prompt, m.options))),
    )


def probe_rows(root: str | Path) -> list[dict]:
    """Every probe row of every config of a dataset folder."""
    from ksmith.data import list_configs, load_probes

    rows: list[dict] = []
    for config in list_configs(root):
        rows.extend(load_probes(root, config))
    return rows


def vocabulary_texts(corpus: Iterable[str], rows: Iterable[dict]) -> list[str]:
    """Every text a model of this world may read or be asked to write: corpus lines, probe
    prompts, options and answers (before and after). The tokenizer's vocabulary comes from
    these, so no probe holds an unknown word; the model itself trains on the corpus only."""
    texts = list(corpus)
    for row in rows:
        texts.append(row["prompt"])
        texts.extend(" " + o for o in row.get("options") or [])
        for key in ("answer_before", "answer_after"):
            if row.get(key):
                texts.append(" " + row[key])
    return texts


def measure(backend: Backend, probes: KnowledgeProbes) -> tuple[float | None, float | None]:
    """(direct cloze recall, direct MCQ accuracy); None where there are no probes."""
    recall = None
    if probes.cloze:
        acc = backend.token_accuracy([(p, " " + a) for p, a in probes.cloze])
        recall = sum(a == 1.0 for a in acc) / len(acc)
    mcq_accuracy = None
    if probes.mcq:
        requests = [(m.prompt, " " + o) for m in probes.mcq for o in m.options]
        ll = backend.loglikelihood(requests)
        correct, i = 0, 0
        for m in probes.mcq:
            scores = ll[i : i + len(m.options)]
            i += len(m.options)
            correct += max(range(len(scores)), key=scores.__getitem__) == m.gold
        mcq_accuracy = correct / len(probes.mcq)
    return recall, mcq_accuracy
