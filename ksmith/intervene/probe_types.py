"""The probe types that draw facts of their own: multi-hop, comparison, contextual (and the
retain view), negation (the table: `ksmith.intervene.probes`).

`ProbeTypes` is mixed into `ProbeBuilder`: its methods read the builder's state (index,
renderer, spec, group diff, seeded draws, the keys already asked) and emit rows through its
row assembly (`_emit`, `_fact_formats`).
"""

from __future__ import annotations

from ksmith.intervene.columns import random_order
from ksmith.intervene.sample import PlannedRequest
from ksmith.intervene.worlds import values_after
from ksmith.render.text import COMPARISON_CUE, FALSE, NO, TF_CUE, TRUE, YES, reasoned

_BINARY = ("mcq", "qa")  # formats of yes/no and true/false probes


class ProbeTypes:
    """Multi-hop, comparison, contextual, retain and negation probes of a `ProbeBuilder`."""

    # -- multi-hop --------------------------------------------------------------------------

    def _multi_hop(self, req: PlannedRequest) -> None:
        cap = self.spec.multi_hop_per_request
        if not cap:
            return
        ix = self.ix
        deps = ix.world._dependents.get(ix.world._row_of_base[req.fact.id], [])
        taken = 0
        seen: set[tuple[str, str, str]] = set()
        for row in random_order(deps, self.rng.below):
            if taken == cap:
                break
            if ix.table.hops[row] > self.spec.max_hops:
                continue
            d = ix.triple(row)
            if d not in self.diff.removed_triples or d in seen:
                continue  # unchanged, or another derivation of a triple already asked
            seen.add(d)
            key = (d[0], d[1])
            if req.kind == "edit":
                gained = self.diff.added.get(key, [])
                if not gained:
                    continue
                after = req.new_object if req.new_object in gained else gained[0]
            else:
                after = d[2]
            self.used.add(ix.key(*key))
            taken += 1
            self._fact_formats("multi_hop", "Q+", d, self._prompts(d[1], d[0]), d[2], after,
                               ix.support_ids(row), hops=ix.table.hops[row])  # fmt: skip

    # -- comparison -------------------------------------------------------------------------

    def _comparison(self, req: PlannedRequest, support: set[str]) -> None:
        f = req.fact
        s, r = f.subject, f.relation
        ix = self.ix
        before_set = frozenset(ix.values((s, r)))
        after_set = frozenset(values_after(ix, self.diff, (s, r)))
        kinds = [(before_set, YES, NO)]  # y shares s's old values: yes -> no
        if req.kind == "edit":
            kinds.append((after_set, NO, YES))  # y has s's new values: no -> yes
        self.rng.shuffle(kinds)
        made = 0
        for target, before, after in kinds:
            if made == self.spec.comparison_per_request:
                break
            y = next(  # uniform among the eligible: the first of a lazy random order
                (
                    y
                    for y in random_order(ix.subjects_with_valueset(r, target), self.rng.below)
                    if y != s and ix.key(y, r) not in self.changed
                ),
                None,
            )
            if y is None:
                continue
            self.used.add(ix.key(y, r))
            sup = set(support)
            for g in ix.rows(y, r):
                sup |= ix.support_ids(g)
            sup_list = sorted(sup)
            prompt = self.rd.comparison(r, s, y)
            cue = COMPARISON_CUE if reasoned(len(before_set), len(target)) else ""
            if not cue:  # as the corpus's comparison lines without the recall
                prompt = f"{prompt} {COMPARISON_CUE}"
            for fmt in self.formats:
                if fmt in _BINARY:
                    opts = [YES, NO] if fmt == "mcq" else []
                    self._emit("comparison", "Q+", fmt, prompt, opts, before, after,
                               (s, r, f.object), 0, "", sup_list, cue)  # fmt: skip
            made += 1

    # -- contextual and retain --------------------------------------------------------------

    def _unaffected_near(self, s: str, k: int) -> list[int]:
        """Up to k rows of unaffected facts near s (same subject, siblings, parent/children,
        then anywhere) whose (subject, relation) no probe of the group asks yet; marks them
        used."""
        if k <= 0:
            return []
        ix = self.ix
        avoid, changed = self.used, self.changed
        cands = ix.near_rows(s)
        subj, rel, n_rel = ix.table.subj, ix.table.rel, ix.n_rel
        out: list[int] = []
        seen: set[int] = set()
        for g in random_order(cands, self.rng.below):
            if len(out) == k:
                break
            key = subj[g] * n_rel + rel[g]
            if key in avoid or key in seen or key in changed:
                continue
            seen.add(key)
            out.append(g)
        for _ in range(8 * k):  # then anywhere in the world
            if len(out) == k:
                break
            g = self.rng.below(ix.n_facts)
            key = subj[g] * n_rel + rel[g]
            if key in avoid or key in seen or key in changed:
                continue
            seen.add(key)
            out.append(g)
        avoid.update(seen)
        return out

    def retain(self, req: PlannedRequest, k: int) -> tuple[list[str], list[str]]:
        """Q- training view: prompts/answers of k unaffected facts asked by no probe."""
        prompts, answers = [], []
        ix, rd = self.ix, self.rd
        for g in self._unaffected_near(req.fact.subject, k):
            s, r, o = (
                ix.names[ix.table.subj[g]],
                ix.rels[ix.table.rel[g]],
                ix.names[ix.table.obj[g]],
            )
            prompts += (rd.cloze(r, s), rd.question(r, s))
            answers += (o, o)
        return prompts, answers

    # -- negation ---------------------------------------------------------------------------

    def _negation(self, req: PlannedRequest, support: set[str]) -> None:
        f = req.fact
        s, r, o = f.subject, f.relation, f.object
        sup = sorted(support)
        edit = req.kind == "edit"  # after an edit the old statement is false, the new one true
        self._tf_pair("Q+", (s, r, o), sup, f"{req.request_id}.neg+", True, not edit)
        if edit:  # the new object's statement: false before (a fact must be known, not the
            # sentence's form: "is not" -> false), true after
            self._tf_pair("Q+", (s, r, req.new_object), sup, f"{req.request_id}.neg+new",
                          False, True, asked=(s, r, o))  # fmt: skip
        for g in self._unaffected_near(s, 1):
            sup = sorted(self.ix.support_ids(g))
            triple = self.ix.triple(g)
            self._tf_pair("Q-", triple, sup, f"{req.request_id}.neg-", True, True)
            # and a false statement of it (a value it holds in neither world), so that true and
            # false answers are balanced: "not" in the sentence no longer predicts the answer
            gs, gr, _ = triple
            wrong = self._wrong_value(gs, gr)
            if wrong is not None:
                self._tf_pair("Q-", (gs, gr, wrong), sup, f"{req.request_id}.neg-false", False,
                              False, asked=triple)  # fmt: skip

    def _wrong_value(self, subject: str, relation: str) -> str | None:
        """A seeded value of the relation's range that `subject` holds in neither world."""
        pool = self.ix.range_of(relation, subject)
        held = self.held(subject, relation)
        below = self.rng.below
        for _ in range(16):
            v = pool[below(len(pool))] if pool else None
            if v is not None and v not in held:
                return v
        return next((v for v in pool if v not in held), None)

    def _tf_pair(self, qset, stated, sup, pair, true_before: bool, true_after: bool, asked=None):
        """A statement of `stated` and its negation, as true/false probes; `asked` is the fact
        recorded for them (default `stated`)."""
        s, r, o = stated
        stmt = self.rd.tf_prompt(self.rd.statement(r, s, o))
        neg = self.rd.tf_prompt(self.rd.negation(r, s, o))
        fact = asked or stated
        # reasoned as the corpus's true/false lines about (s, r): by its values before
        cue = TF_CUE if reasoned(len(self.ix.values((s, r)))) else ""
        for fmt in self.formats:
            if fmt not in _BINARY:
                continue
            opts = [TRUE, FALSE] if fmt == "mcq" else []
            p = f"{pair}.{fmt}"
            for prompt, holds_b, holds_a in (
                (stmt, true_before, true_after),
                (neg, not true_before, not true_after),
            ):
                self._emit("negation", qset, fmt, prompt, opts, TRUE if holds_b else FALSE,
                           TRUE if holds_a else FALSE, fact, 0, p, sup, cue)  # fmt: skip
