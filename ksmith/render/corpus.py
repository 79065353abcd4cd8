"""The world model's training corpus: every fact of the closure in training templates.

Per fact (base and derived, in fact id order): one statement (templates rotate over facts), the
cloze form when the statement does not already begin with it, the training question with its
answer, and two true/false lines (the statement is true, its negation is false). Every second
fact (by default) also gets a true/false line about a wrong object, so "true" is not the only
answer ever seen. Paraphrase templates are never used here: they are held out for evaluation.

Lines are built column-wise with arrow string kernels, per relation and template, on blocks of
facts (`corpus_batches`); only the wrong-object draws walk the facts one by one, with the
seeded random stream.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ksmith.render.text import FALSE, TF_PREFIX, TRUE, Renderer, fill

BLOCK = 1 << 17  # facts per batch: bounds memory, fixed so output never depends on the machine
CORPUS_NAMES = ("domain", "fact_id", "text")


def range_values(world, relation: str, subject: str, cache: dict) -> list[str]:
    """`world.range_values`, cached per relation (per subject level for the hierarchy)."""
    hier = relation == world.spec.hierarchy.relation
    key = (relation, world.level_of(subject) if hier else None)
    if key not in cache:
        cache[key] = list(world.range_values(relation, subject if hier else None))
    return cache[key]


def world_facts(world) -> list:
    """The closure's facts in fact id order (base facts, then derived facts by number)."""
    return list(world.facts)


def _fill_column(template: str, subj: pa.Array, obj: pa.Array, prefix: str, suffix: str):
    """`prefix + fill(template, s, o) + suffix` for every row (arrow string kernels)."""
    parts: list = []
    text = prefix + template + suffix
    while text:
        i, j = text.find("{subject}"), text.find("{object}")
        cut = min(x for x in (i, j, len(text)) if x >= 0)
        if cut:
            parts.append(text[:cut])
            text = text[cut:]
            continue
        parts.append(subj if i == 0 else obj)
        text = text[len("{subject}") if i == 0 else len("{object}") :]
    if not any(isinstance(p, pa.Array) for p in parts):  # no placeholder: one constant line
        return pa.array(["".join(parts)] * len(subj), pa.string())
    return pc.binary_join_element_wise(*parts, "")


def _starts_with(statement: str, cloze: str) -> bool | None:
    """Whether fill(statement) always (True) or never (False) starts with fill(cloze) + " " +
    object; None when it depends on the names."""
    if statement.startswith(cloze + " {object}"):
        return True
    a, b = statement.split("{", 1)[0], cloze.split("{", 1)[0]
    if not (a.startswith(b) or b.startswith(a)):
        return False
    return None


def _wrong_objects(world, facts: range, rng: random.Random, every: int) -> dict[int, int]:
    """Row -> a value its (subject, relation) does not hold, for one fact in `every` (seeded:
    the same random stream as drawing them one by one with `rng.randrange`)."""
    t = world._table
    names, index, levels = world._ents.names, world._ents.index, world._ents.level
    n_rel, rels = len(world._rels), world._rels
    sr_rows, subj, rel, obj = world._by_subject_relation, t.subj, t.rel, t.obj
    ranges: dict = {}
    by_key: dict[tuple[int, str | None], list[int]] = {}  # (relation, level if hierarchy)
    below = rng._randbelow
    out: dict[int, int] = {}
    for pos in range(0, len(facts), every):
        i = facts[pos]
        s, r = subj[i], rel[i]
        key = (r, levels[s] if r == 0 else None)
        ids = by_key.get(key)
        if ids is None:
            values = range_values(world, rels[r], names[s], ranges)
            ids = by_key[key] = [index[v] for v in values]
        rows = sr_rows[s * n_rel + r]
        held = [obj[j] for j in rows] if len(rows) < 8 else {obj[j] for j in rows}
        w = None
        for _ in range(8):  # rejection first: ranges are usually large
            if not ids:
                break
            v = ids[below(len(ids))]
            if v not in held:
                w = v
                break
        else:
            free = [v for v in ids if v not in held]
            w = free[below(len(free))] if free else None
        if w is not None:
            out[pos] = w
    return out


def corpus_batches(
    world, renderer: Renderer, *, seed: int, wrong_object_every: int = 2
) -> Iterator[pa.Table]:
    """Arrow tables (domain, fact_id, text) of `world`'s corpus, in order, one per block of
    `BLOCK` facts. `wrong_object_every`: one fact in this many also gets a false statement
    about a value it does not hold (0 disables)."""
    t = world._table
    n = len(t)
    rng = random.Random(seed)
    every = wrong_object_every
    wrong = _wrong_objects(world, range(n), rng, every) if every else {}
    names = pa.array(world._ents.names, pa.string())
    rels = world._rels
    ids = pa.concat_arrays([
        pa.array(world._base_ids[: t.n_base], pa.string()),
        pc.binary_join_element_wise(
            "d",
            pc.utf8_lpad(pc.cast(pa.array(np.arange(n - t.n_base)), pa.string()), 6, "0"),
            "",
        ),
    ])  # fmt: skip
    subj = np.asarray(t.subj, dtype=np.int64)
    rel = np.asarray(t.rel, dtype=np.int32)
    obj = np.asarray(t.obj, dtype=np.int64)
    domain = pa.array([world.spec.domain], pa.string())
    for lo in range(0, n, BLOCK):
        hi = min(n, lo + BLOCK)
        yield _block(renderer, rels, names, ids, domain, subj, rel, obj, wrong, lo, hi, every)


def _block(rd, rels, names, ids, domain, subj, rel, obj, wrong, lo, hi, every) -> pa.Table:
    texts: list[pa.Array] = []
    keys: list[np.ndarray] = []  # position * 8 + line kind: the order lines are written in
    facts: list[np.ndarray] = []  # fact position, or -1 for lines that state no fact
    pos = np.arange(lo, hi)
    R = rel[lo:hi]
    for r in np.unique(R):
        sel = pos[R == r]
        S, Ob = names.take(subj[sel]), names.take(obj[sel])
        tx = rd.text(rels[r])
        cloze, question = tx.cloze[0], tx.question[0]

        def put(kind: int, rows: np.ndarray, arr: pa.Array, stated: bool = True) -> None:
            texts.append(arr)
            keys.append(rows * 8 + kind)
            facts.append(rows if stated else np.full(len(rows), -1))

        st = tx.statement
        for v in range(len(st)):  # statement variant = position mod the template count
            m = sel % len(st) == v
            if not m.any():
                continue
            rows, s_v, o_v = sel[m], S.filter(pa.array(m)), Ob.filter(pa.array(m))
            stmt = _fill_column(st[v], s_v, o_v, "", "")
            put(0, rows, stmt)
            same = _starts_with(st[v], cloze)
            if same is None:  # decide per row
                s_l, o_l, t_l = s_v.to_pylist(), o_v.to_pylist(), stmt.to_pylist()
                keep = np.array([
                    not x.startswith(f"{fill(cloze, a)} {b}")
                    for x, a, b in zip(t_l, s_l, o_l, strict=True)
                ], dtype=bool)  # fmt: skip
            else:
                keep = np.full(len(rows), not same)
            if keep.any():
                k = pa.array(keep)
                put(1, rows[keep], _fill_column(cloze, s_v.filter(k), o_v.filter(k), "",
                                                " {object}"))  # fmt: skip
        put(2, sel, _fill_column(question, S, Ob, "", " {object}"))
        put(3, sel, _fill_column(st[0], S, Ob, f"{TF_PREFIX} ", f" {TRUE}"))
        put(4, sel, _fill_column(tx.negation[0], S, Ob, f"{TF_PREFIX} ", f" {FALSE}"))
        if every:
            w_rows = np.array([p for p in sel.tolist() if p in wrong], dtype=np.int64)
            if len(w_rows):
                W = names.take(pa.array([wrong[p] for p in w_rows.tolist()], pa.int64()))
                S_w = names.take(subj[w_rows])
                neg = (w_rows // max(every, 1)) % 2 == 1
                for flag, tmpl, ans in ((False, st[0], FALSE), (True, tx.negation[0], TRUE)):
                    m = neg == flag
                    if m.any():
                        k = pa.array(m)
                        arr = _fill_column(tmpl, S_w.filter(k), W.filter(k), f"{TF_PREFIX} ",
                                           f" {ans}")  # fmt: skip
                        put(5, w_rows[m], arr, stated=False)
    order = np.argsort(np.concatenate(keys), kind="stable")
    text = pa.concat_arrays(texts).take(order)
    fact = np.concatenate(facts)[order]
    stated = fact >= 0
    fid = ids.take(pa.array(np.where(stated, fact, 0)))
    fid = pc.if_else(pa.array(stated), fid, pa.scalar("", pa.string()))
    dom = domain.take(pa.array(np.zeros(len(order), dtype=np.int64)))
    return pa.Table.from_arrays([dom, fid, text], names=list(CORPUS_NAMES))


def corpus_lines(
    world,
    renderer: Renderer,
    *,
    seed: int,
    wrong_object_every: int = 2,
) -> Iterator[tuple[str, str, str]]:
    """Yield ``(domain, fact_id, text)`` rows for `world`'s closure, in a deterministic order
    (the rows of `corpus_batches`, as Python tuples)."""
    for batch in corpus_batches(world, renderer, seed=seed, wrong_object_every=wrong_object_every):
        yield from zip(*(c.to_pylist() for c in batch.columns), strict=True)
