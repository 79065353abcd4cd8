"""Per-item token scores of an unlearn cell, and the relearning attack (docs/unlearning.md).

For every unlearn config the evaluator stores, per group, the teacher-forced token scores
(`ItemScores`: log p and argmax hit of each answer token) the field's unlearning metrics need,
in ``items.parquet``; `ksmith.evaluate.retain_metrics` computes every number from these rows
and the predictions, so `ksmith leaderboard verify` recomputes them. Rows (`ITEMS_SCHEMA`):

- side ``forget``: each forgotten fact (`fact_items(probes, "Q+")`), role ``correct`` (its
  paraphrase cloze prompts with the forgotten object) and ``perturbed`` (the same prompts with
  each same-relation wrong object, the mcq distractors): truth ratio, MIA, EM and ES;
- side ``retain``: the same for the Q- contextual facts (model utility);
- side ``relearn``: the relearning attack (`relearn_attack`), role ``attack`` (the pairs it
  fine-tunes on, scored before), ``before`` and ``after`` (the held-out forget facts' direct
  prompts, scored before and after the attack).

The retain model's evaluation (`ksmith pipeline evaluate --model out/retain`) stores the same
rows for the same configs, so each unlearned item has its counterfactual twin.
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ksmith.errors import KsmithError
from ksmith.evaluate.fact_items import FactItems, fact_items
from ksmith.evaluate.item_scores import ItemScores

log = logging.getLogger(__name__)

ITEMS_FILE = "items.parquet"
SIDES = ("forget", "retain", "relearn")
ROLES = ("correct", "perturbed", "attack", "before", "after")
ITEMS_SCHEMA = pa.schema(
    [
        ("group", pa.int32()),
        ("side", pa.string()),  # forget | retain | relearn
        ("item", pa.string()),  # the fact: "<request_id>|<subject>|<relation>|<object>"
        ("role", pa.string()),  # correct | perturbed | attack | before | after
        ("prompt", pa.string()),
        ("answer", pa.string()),
        ("logprobs", pa.list_(pa.float64())),
        ("hits", pa.list_(pa.bool_())),
    ]
)

# The relearning attack (Hu et al. 2024, "Jogging the Memory of Unlearned LLMs Through Targeted
# Relearning Attacks", arXiv 2406.13356; Lynch et al. 2024, arXiv 2402.16835, section 4.3):
# fine-tune the unlearned model on a small part of its forget set and measure how much of the
# rest comes back. Fixed here so every method, level and scale faces the same attack.
RELEARN_FRACTION = 0.25  # share of a group's forget requests the attacker holds (at least 1)
RELEARN_STEPS = 10  # passes over the attack pairs
RELEARN_LR = 1e-3  # Adam, the order of the world model's own learning rate (1.5e-3)
RELEARN_BATCH = 16


def item_key(f: FactItems) -> str:
    return "|".join((f.request_id, *f.fact))


def item_scores(backend: Any, pairs: Sequence[tuple[str, str]]) -> list[ItemScores]:
    """`ItemScores` of each (prompt, answer), scored as evaluation scores ``prompt + " " +
    answer``: the backend's batched `score` (a one-token answer's log p and argmax hit are its
    sums), and `token_logprobs` per token for a longer answer."""
    if not hasattr(backend, "token_logprobs") or not hasattr(backend, "score"):
        raise KsmithError(
            f"backend {type(backend).__name__} has no per-token scores (token_logprobs): the "
            "unlearning metrics need the hf backend"
        )
    requests = [(p, " " + a) for p, a in pairs]
    out = []
    for (prompt, cont), s in zip(requests, backend.score(requests), strict=True):
        answer = cont[1:]
        if s.n_tokens == 1:
            out.append(ItemScores((s.loglikelihood,), (s.token_accuracy == 1.0,), answer))
            continue
        toks = backend.token_logprobs(prompt, cont)
        out.append(ItemScores(tuple(t for t, _, _ in toks),
                              tuple(t >= best for t, best, _ in toks), answer))  # fmt: skip
    return out


def _rows(group: int, side: str, item: str, role: str, pairs, scores) -> list[dict[str, Any]]:
    return [
        {
            "group": group,
            "side": side,
            "item": item,
            "role": role,
            "prompt": p,
            "answer": a,
            "logprobs": list(s.logprobs),
            "hits": list(s.hits),
        }  # fmt: skip
        for (p, a), s in zip(pairs, scores, strict=True)
    ]


def fact_rows(
    backend: Any, facts: Sequence[FactItems], side: str, prefixes: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Rows of `facts`: each correct and each perturbed (prompt, answer) pair, scored, each
    prompt after its request's in-context prefix (`prefixes`, as evaluation scores it)."""
    from ksmith.evaluate.scoring import with_prefix

    out: list[dict[str, Any]] = []
    for f in facts:
        pre = prefixes.get(f.request_id, "")
        for role, pairs in (("correct", f.correct_requests()),
                            ("perturbed", f.perturbed_requests())):  # fmt: skip
            pairs = [(with_prefix(p, pre), a) for p, a in pairs]
            out.extend(_rows(f.group, side, item_key(f), role, pairs, item_scores(backend, pairs)))
    return out


def relearn_split(
    requests: Sequence[Mapping[str, Any]], config: str, group: int, seed: int
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(attack, held out): a seeded RELEARN_FRACTION of the group's requests (at least one,
    at most all but one) and the rest; ([], []) for a group of fewer than two requests."""
    from ksmith.intervene import derive_seed

    if len(requests) < 2:
        return [], []
    order = sorted(requests, key=lambda r: r["request_id"])
    random.Random(derive_seed(seed, config, group, "relearn")).shuffle(order)
    n = min(len(order) - 1, max(1, round(RELEARN_FRACTION * len(order))))
    return order[:n], order[n:]


def relearn_attack(
    model: Any,
    tokenizer: Any,
    attack: Sequence[tuple[str, str]],
    make_backend,
    held_out: Sequence[tuple[str, str]],
) -> tuple[list[ItemScores], list[ItemScores], list[ItemScores]]:
    """Fine-tune a copy of `model` on the `attack` (prompt, answer) pairs (Adam, RELEARN_STEPS
    passes, lr RELEARN_LR, the answer's mean token cross-entropy) and score `held_out` before
    and after. Returns (attack pairs before, held out before, held out after); `model` itself
    is not changed. `make_backend(model)` gives a scoring backend on a model."""
    import torch

    from ksmith.methods.base import TextPair
    from ksmith.methods.fit import FitParams, fit_pairs
    from ksmith.methods.train_utils import answer_logprobs

    before = make_backend(model)
    attack_before = item_scores(before, attack)
    held_before = item_scores(before, held_out)
    copy_ = copy.deepcopy(model)
    copy_.train()
    with torch.enable_grad():
        fit_pairs(
            copy_,
            tokenizer,
            [TextPair(p, a) for p, a in attack],
            [],
            [p for p in copy_.parameters() if p.is_floating_point()],
            FitParams(
                lr=RELEARN_LR, steps=RELEARN_STEPS, batch_size=RELEARN_BATCH, early_stop_loss=0.0
            ),  # fmt: skip
            lambda m, b: answer_logprobs(m, b, reduction="mean"),
        )
    copy_.eval()
    held_after = item_scores(make_backend(copy_), held_out)
    del copy_
    return attack_before, held_before, held_after


def group_rows(
    model: Any,
    tokenizer: Any,
    make_backend,
    probes: Sequence[Mapping[str, Any]],
    requests: Sequence[Mapping[str, Any]],
    *,
    config: str,
    group: int,
    seed: int,
    prefixes: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Every items.parquet row of one group, under `model` (the group's unlearned model, or the
    base/retain model for an evaluation without an update; `prefixes`: its in-context
    prefixes per request id)."""
    from ksmith.evaluate.scoring import with_prefix

    prefixes = prefixes or {}
    backend = make_backend(model)
    rows = fact_rows(backend, fact_items(probes, "Q+", requests=requests), "forget", prefixes)
    rows += fact_rows(backend, fact_items(probes, "Q-"), "retain", prefixes)
    attack, held = relearn_split(requests, config, group, seed)
    if attack:

        def pairs(rs):
            return [(with_prefix(r["prompt"], prefixes.get(r["request_id"], "")), r["object"])
                    for r in rs]  # fmt: skip

        a, b, c = relearn_attack(model, tokenizer, pairs(attack), make_backend, pairs(held))
        for role, reqs, scores in (("attack", attack, a), ("before", held, b), ("after", held, c)):
            for r, pair, s in zip(reqs, pairs(reqs), scores, strict=True):
                rows += _rows(group, "relearn", _request_key(r), role, [pair], [s])
    return rows


def _request_key(r: Mapping[str, Any]) -> str:
    return "|".join((r["request_id"], r["subject"], r["relation"], r["object"]))


def write_items(folder: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    pq.write_table(pa.Table.from_pylist(list(rows), schema=ITEMS_SCHEMA), Path(folder) / ITEMS_FILE)


def read_items(path: str | Path) -> list[dict[str, Any]]:
    """Rows of an items.parquet (a file, or a cell folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / ITEMS_FILE
    if not path.is_file():
        raise KsmithError(f"{path}: not found (per-item scores of an unlearn cell)")
    table = pq.read_table(path)
    missing = set(ITEMS_SCHEMA.names) - set(table.column_names)
    if missing:
        raise KsmithError(f"{path}: not an items file (columns {sorted(missing)} missing)")
    return table.select(ITEMS_SCHEMA.names).to_pylist()


def scores_of(row: Mapping[str, Any]) -> ItemScores:
    return ItemScores(tuple(row["logprobs"]), tuple(row["hits"]), row["answer"])
