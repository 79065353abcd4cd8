"""Cheap knowledge checks while the world model trains.

Recall is the share of `direct` cloze probes answered fully right (docs/contracts.md, section
3: every answer token the greedy choice, teacher-forced); MCQ accuracy the share of mcq probes
whose highest-likelihood option is right. The same two measures, per probe type and for
in-context use, make the training check of the capability profile (`ksmith.world.profile`):
scoring only, except that reasoned mcq probes (a `cue`: negation, comparison) are scored
after the model's own greedy recall, as in the profile (`ksmith.evaluate.scoring`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ksmith.evaluate.backend import Backend
from ksmith.evaluate.scoring import reasoned_prompts, with_prefix


@dataclass(frozen=True)
class Cloze:
    kind: str  # probe type, or "in_context"
    prompt: str
    answer: str


@dataclass(frozen=True)
class MCQ:
    kind: str
    prompt: str
    options: tuple[str, ...]
    gold: int  # index of the correct option
    cue: str = ""  # reasoned probes: the options follow the model's own recall and this cue


@dataclass(frozen=True)
class KnowledgeProbes:
    """De-duplicated cloze (prompt, answer) probes and MCQs, each labelled with its probe type
    (or ``in_context``)."""

    cloze: tuple[Cloze, ...]
    mcq: tuple[MCQ, ...]

    def sample(self, n: int, seed: int) -> KnowledgeProbes:
        """A fixed seeded sample of at most `n` of each kind and format (n=0: everything)."""
        if n <= 0:
            return self
        rng = random.Random(seed)

        def pick(items: Sequence) -> tuple:
            by_kind: dict[str, list] = {}
            for x in items:
                by_kind.setdefault(x.kind, []).append(x)
            out: list = []
            for kind in sorted(by_kind):
                xs = by_kind[kind]
                out += xs if len(xs) <= n else rng.sample(xs, n)
            return tuple(out)

        return KnowledgeProbes(cloze=pick(self.cloze), mcq=pick(self.mcq))

    def kinds(self) -> list[str]:
        return sorted({x.kind for x in (*self.cloze, *self.mcq)})

    def __add__(self, other: KnowledgeProbes) -> KnowledgeProbes:
        return KnowledgeProbes(self.cloze + other.cloze, self.mcq + other.mcq)


def collect_probes(
    rows: Iterable[dict],
    *,
    types: Sequence[str] | None = ("direct",),
    answer: str = "answer_before",
    prefixes: dict[str, str] | None = None,
    kind: str | None = None,
) -> KnowledgeProbes:
    """Cloze and mcq probes of `types` (None: all) from probe rows, de-duplicated and sorted,
    asking `answer`; with `prefixes` (request_id -> text), each prompt is prefixed and rows
    without a prefix are skipped. `kind` relabels every probe (default: its type)."""
    cloze: set[Cloze] = set()
    mcq: set[MCQ] = set()
    for row in rows:
        if types is not None and row["type"] not in types:
            continue
        prompt = row["prompt"]
        if prefixes is not None:
            if row["request_id"] not in prefixes:
                continue
            prompt = with_prefix(prompt, prefixes[row["request_id"]])
        label = kind or row["type"]
        if row["format"] == "cloze":
            cloze.add(Cloze(label, prompt, row[answer]))
        elif row["format"] == "mcq" and row[answer] in row["options"]:
            options = tuple(row["options"])
            mcq.add(MCQ(label, prompt, options, options.index(row[answer]), row.get("cue") or ""))
    return KnowledgeProbes(
        cloze=tuple(sorted(cloze, key=lambda c: (c.kind, c.prompt, c.answer))),
        mcq=tuple(sorted(mcq, key=lambda m: (m.kind, m.prompt, m.options))),
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


def measure(backend: Backend, probes: KnowledgeProbes) -> dict[str, dict[str, float]]:
    """kind -> {"cloze": share fully right (every answer token greedy), "mcq": share whose
    highest-likelihood option is the gold one}, for each kind with probes of that format."""
    hits: dict[str, dict[str, list[bool]]] = {}
    if probes.cloze:
        acc = backend.token_accuracy([(c.prompt, " " + c.answer) for c in probes.cloze])
        for c, a in zip(probes.cloze, acc, strict=True):
            hits.setdefault(c.kind, {}).setdefault("cloze", []).append(a == 1.0)
    if probes.mcq:
        prompts = reasoned_prompts(backend, [m.prompt for m in probes.mcq],
                                   [m.cue for m in probes.mcq], desc="check")  # fmt: skip
        asked = zip(probes.mcq, prompts, strict=True)
        requests = [(p, " " + o) for m, p in asked for o in m.options]
        ll = backend.loglikelihood(requests)
        i = 0
        for m in probes.mcq:
            scores = ll[i : i + len(m.options)]
            i += len(m.options)
            best = max(range(len(scores)), key=scores.__getitem__)
            hits.setdefault(m.kind, {}).setdefault("mcq", []).append(best == m.gold)
    return {
        k: {f: sum(v) / len(v) for f, v in sorted(fs.items())} for k, fs in sorted(hits.items())
    }
