"""Probes for one group of requests, derived from the closure before and after the update.

For each request (s, r, o -> o'), with W the world and W' = W.with_changes(group):

| type | set | asks |
|---|---|---|
| direct | Q+ | (s, r) with the training cloze/question templates |
| paraphrase | Q+ | (s, r) with held-out paraphrase templates |
| reverse | Q+ | the object back to the subject (edit: o' -> s; unlearn: o -> s), mcq over subjects |
| multi_hop | Q+ | derived facts among W.dependents(fact) that differ in W' |
| comparison | Q+ | "same answer for s and y?" for a y whose yes/no flips between W and W' |
| contextual | Q- | unaffected facts: same subject, siblings, parent/children, anywhere |
| negation | Q+/Q- | "True or false: <statement|negation>" of the fact, and of an unaffected fact |

Unlearn Q+ probes keep answer_after = the old answer with expect_after = "avoid" (KnowledgeSmith,
arXiv 2510.02392: unlearning must stop producing the fact, with no new target). Conflict pairs
(same `pair_id`): direct vs reverse (mcq), statement vs negation (per format).
"""

from __future__ import annotations

import random

from ksmith.intervene.sample import PlannedRequest
from ksmith.intervene.worlds import (
    GroupDiff,
    WorldIndex,
    holds_after,
    holds_before,
    values_after,
)
from ksmith.render.text import FALSE, NO, TRUE, YES, Renderer

MATCH, AVOID = "match", "avoid"
_BINARY = ("mcq", "qa")  # formats of yes/no and true/false probes


class ProbeBuilder:
    """Builds probe rows (tuples ordered as `ksmith.data.schema.PROBE_FIELDS`) for one group."""

    def __init__(self, index: WorldIndex, renderer: Renderer, ispec, diff: GroupDiff, seed: int):
        self.ix = index
        self.rd = renderer
        self.spec = ispec
        self.diff = diff
        self.changed = diff.keys
        self.rng = random.Random(seed)
        self.types = set(ispec.probe_types)
        self.formats = list(ispec.formats)
        self.rows: list[tuple] = []
        self.used: set[tuple[str, str]] = set()  # (subject, relation) asked by any probe
        self._req: PlannedRequest | None = None
        self._counts: dict[tuple[str, str], int] = {}

    # -- row assembly -----------------------------------------------------------------------

    def _emit(
        self,
        type_,
        qset,
        fmt,
        prompt,
        options,
        before,
        after,
        fact,
        *,
        hops=0,
        pair="",
        support=None,
    ):
        req = self._req
        n = self._counts.get((type_, fmt), 0)
        self._counts[(type_, fmt)] = n + 1
        unlearn_plus = req.kind == "unlearn" and qset == "Q+"
        self.rows.append(
            (
                f"{req.request_id}.{type_}.{fmt}.{n}",
                req.group,
                req.request_id,
                req.kind,
                req.level,
                type_,
                qset,
                fmt,
                prompt,
                options,
                before,
                before if unlearn_plus else after,
                AVOID if unlearn_plus else MATCH,
                hops,
                fact[0],
                fact[1],
                fact[2],
                pair,
                sorted(support) if support is not None else [],
            )
        )

    def _options(self, answers: list[str], pool: list[str], exclude: set[str]) -> list[str]:
        """4 options: `answers` (1-2 correct ones) plus distractors from `pool`, shuffled."""
        opts = list(dict.fromkeys(answers))
        banned = exclude | set(opts)
        tries = 0
        while len(opts) < 4 and tries < 24 and pool:
            v = pool[self.rng.randrange(len(pool))]
            tries += 1
            if v not in banned:
                opts.append(v)
                banned.add(v)
        if len(opts) < 4:
            opts.extend(v for v in pool if v not in banned)
            opts = opts[:4]
        self.rng.shuffle(opts)
        return opts

    def _fact_formats(
        self, type_, qset, fact, prompts, before, after, *, hops=0, support=None, pair=""
    ):
        """cloze / qa / mcq probes asking for an object: prompts = {format: prompt}."""
        s, r, _ = fact
        for fmt in self.formats:
            if fmt == "mcq":
                held = set(self.ix.values((s, r))) | set(values_after(self.ix, self.diff, (s, r)))
                opts = self._options([before, after], self.ix.range_of(r, s), held)
            else:
                opts = []
            self._emit(
                type_,
                qset,
                fmt,
                prompts[fmt],
                opts,
                before,
                after,
                fact,
                hops=hops,
                support=support,
                pair=pair if fmt == "mcq" else "",
            )

    # -- per request ------------------------------------------------------------------------

    def add_request(self, req: PlannedRequest) -> None:
        self._req = req
        self._counts = {}
        f = req.fact
        s, r, o = f.subject, f.relation, f.object
        after = req.new_object if req.new_object is not None else o
        fact = (s, r, o)
        support = set(f.support) if f.support else {f.id}
        self.used.add((s, r))
        pair = f"{req.request_id}.reverse" if {"direct", "reverse"} <= self.types else ""
        if "reverse" in self.types and not self._reverse_possible(req):
            pair = ""
        if "direct" in self.types:
            q = self.rd.question(r, s)
            self._fact_formats(
                "direct",
                "Q+",
                fact,
                {"cloze": self.rd.cloze(r, s), "qa": q, "mcq": q},
                o,
                after,
                support=support,
                pair=pair,
            )
        if "paraphrase" in self.types:
            paras = self.rd.paraphrases(r, s)
            k = min(self.spec.paraphrases_per_request, len(paras))
            start = req.index % len(paras)
            for j in range(k):
                p = paras[(start + j) % len(paras)]
                self._fact_formats(
                    "paraphrase",
                    "Q+",
                    fact,
                    {"cloze": p, "qa": p, "mcq": p},
                    o,
                    after,
                    support=support,
                )
        if "reverse" in self.types and pair:
            self._reverse(req, pair, support)
        if "multi_hop" in self.types:
            self._multi_hop(req)
        if "comparison" in self.types:
            self._comparison(req, support)
        if "contextual" in self.types:
            for g in self._unaffected_near(s, r, self.spec.contextual_per_request):
                self._fact_formats(
                    "contextual",
                    "Q-",
                    (g.subject, g.relation, g.object),
                    self._prompts(g),
                    g.object,
                    g.object,
                    support=set(g.support) or {g.id},
                )
        if "negation" in self.types:
            self._negation(req, support)

    def _prompts(self, g) -> dict[str, str]:
        q = self.rd.question(g.relation, g.subject)
        return {"cloze": self.rd.cloze(g.relation, g.subject), "qa": q, "mcq": q}

    # -- reverse ----------------------------------------------------------------------------

    def _reverse_target(self, req: PlannedRequest) -> tuple[str, str] | None:
        """(asked object, answer before) for the reverse probe, or None if none is unique."""
        f = req.fact
        if req.kind == "unlearn":
            return f.object, f.subject
        # before the edit some other subject b held o'; it is the before-world answer
        for b in self.ix.holders.get((f.relation, req.new_object), ()):
            if b != f.subject:
                return req.new_object, b
        return None

    def _reverse_possible(self, req: PlannedRequest) -> bool:
        return self._reverse_target(req) is not None

    def _reverse(self, req: PlannedRequest, pair: str, support: set[str]) -> None:
        f = req.fact
        s, r = f.subject, f.relation
        asked, before = self._reverse_target(req)  # type: ignore[misc]
        pool = self.ix.subjects_by_rel_level.get((r, req.level), [])
        exclude: set[str] = set()  # distractors hold `asked` in neither world
        opts = [s] if before == s else [s, before]
        tries = 0
        while len(opts) < 4 and tries < 32 and pool:
            x = pool[self.rng.randrange(len(pool))]
            tries += 1
            if x in opts or x in exclude:
                continue
            if holds_before(self.ix, r, asked, x) or holds_after(self.ix, self.diff, r, asked, x):
                exclude.add(x)
                continue
            opts.append(x)
        self.rng.shuffle(opts)
        prompt = self.rd.reverse(r, asked)
        for fmt in self.formats:
            self._emit(
                "reverse",
                "Q+",
                fmt,
                prompt,
                opts if fmt == "mcq" else [],
                before,
                s,
                (s, r, f.object),
                support=support,
                pair=pair if fmt == "mcq" else "",
            )

    # -- multi-hop --------------------------------------------------------------------------

    def _multi_hop(self, req: PlannedRequest) -> None:
        cap = self.spec.multi_hop_per_request
        if not cap:
            return
        deps = self.ix.world.dependents(req.fact.id)
        order = list(range(len(deps)))
        self.rng.shuffle(order)
        taken = 0
        seen: set[tuple[str, str, str]] = set()
        for i in order:
            if taken == cap:
                break
            d = deps[i]
            if d.hops > self.spec.max_hops or d.triple not in self.diff.removed_triples:
                continue
            if d.triple in seen:  # one triple may have several derivations
                continue
            seen.add(d.triple)
            key = (d.subject, d.relation)
            if req.kind == "edit":
                gained = self.diff.added.get(key, [])
                if not gained:
                    continue
                after = req.new_object if req.new_object in gained else gained[0]
            else:
                after = d.object
            self.used.add(key)
            taken += 1
            self._fact_formats(
                "multi_hop",
                "Q+",
                (d.subject, d.relation, d.object),
                self._prompts(d),
                d.object,
                after,
                hops=d.hops,
                support=set(d.support),
            )

    # -- comparison -------------------------------------------------------------------------

    def _comparison(self, req: PlannedRequest, support: set[str]) -> None:
        f = req.fact
        s, r = f.subject, f.relation
        before_set = frozenset(self.ix.values((s, r)))
        after_set = frozenset(values_after(self.ix, self.diff, (s, r)))
        kinds = [(before_set, YES, NO)]  # y shares s's old values: yes -> no
        if req.kind == "edit":
            kinds.append((after_set, NO, YES))  # y has s's new values: no -> yes
        self.rng.shuffle(kinds)
        made = 0
        for target, before, after in kinds:
            if made == self.spec.comparison_per_request:
                break
            ys = [
                y
                for y in self.ix.subjects_with_valueset(r, target)
                if y != s and (y, r) not in self.changed
            ]
            if not ys:
                continue
            y = ys[self.rng.randrange(len(ys))]
            y_facts = self.ix.by_key[(y, r)]
            self.used.add((y, r))
            sup = support | {i for g in y_facts for i in (g.support or {g.id})}
            prompt = self.rd.comparison(r, s, y)
            for fmt in self.formats:
                if fmt in _BINARY:
                    opts = [YES, NO] if fmt == "mcq" else []
                    self._emit(
                        "comparison",
                        "Q+",
                        fmt,
                        prompt,
                        opts,
                        before,
                        after,
                        (s, r, f.object),
                        support=sup,
                    )
            made += 1

    # -- contextual and retain --------------------------------------------------------------

    def _unaffected_near(self, s: str, r: str, k: int) -> list:
        """Up to k unaffected facts near s (same subject, siblings, parent/children, then
        anywhere) whose (subject, relation) no probe of the group asks yet; marks them used."""
        if k <= 0:
            return []
        avoid = self.used
        ix = self.ix
        parent = ix.parent.get(s)
        near_subjects = [s]
        if parent is not None:
            near_subjects += [parent, *ix.children.get(parent, ())]
        near_subjects += ix.children.get(s, ())
        cands = []
        for x in near_subjects:
            for rel in ix.relations:
                cands.extend(ix.by_key.get((x, rel), ()))
        self.rng.shuffle(cands)
        out, seen = [], set()
        for g in cands:
            if len(out) == k:
                break
            key = (g.subject, g.relation)
            if key in avoid or key in seen or key in self.changed:
                continue
            seen.add(key)
            out.append(g)
        for _ in range(8 * k):  # then anywhere in the world
            if len(out) == k:
                break
            g = ix.facts[self.rng.randrange(len(ix.facts))]
            key = (g.subject, g.relation)
            if key in avoid or key in seen or key in self.changed:
                continue
            seen.add(key)
            out.append(g)
        avoid.update(seen)
        return out

    def retain(self, req: PlannedRequest, k: int) -> tuple[list[str], list[str]]:
        """Q- training view: prompts/answers of k unaffected facts asked by no probe."""
        prompts, answers = [], []
        for g in self._unaffected_near(req.fact.subject, req.fact.relation, k):
            for p in (
                self.rd.cloze(g.relation, g.subject),
                self.rd.question(g.relation, g.subject),
            ):
                prompts.append(p)
                answers.append(g.object)
        return prompts, answers

    # -- negation ---------------------------------------------------------------------------

    def _negation(self, req: PlannedRequest, support: set[str]) -> None:
        f = req.fact
        s, r, o = f.subject, f.relation, f.object
        fact = (s, r, o)
        flip = req.kind == "edit"  # after an edit the old statement is false
        stmt = self.rd.tf_prompt(self.rd.statement(r, s, o))
        neg = self.rd.tf_prompt(self.rd.negation(r, s, o))
        for fmt in self.formats:
            if fmt not in _BINARY:
                continue
            opts = [TRUE, FALSE] if fmt == "mcq" else []
            pair = f"{req.request_id}.neg+.{fmt}"
            self._emit(
                "negation",
                "Q+",
                fmt,
                stmt,
                opts,
                TRUE,
                FALSE if flip else TRUE,
                fact,
                pair=pair,
                support=support,
            )
            self._emit(
                "negation",
                "Q+",
                fmt,
                neg,
                opts,
                FALSE,
                TRUE if flip else FALSE,
                fact,
                pair=pair,
                support=support,
            )
        for g in self._unaffected_near(s, r, 1):
            gs = (g.subject, g.relation, g.object)
            stmt = self.rd.tf_prompt(self.rd.statement(g.relation, g.subject, g.object))
            neg = self.rd.tf_prompt(self.rd.negation(g.relation, g.subject, g.object))
            sup = set(g.support) or {g.id}
            for fmt in self.formats:
                if fmt not in _BINARY:
                    continue
                opts = [TRUE, FALSE] if fmt == "mcq" else []
                pair = f"{req.request_id}.neg-.{fmt}"
                self._emit(
                    "negation", "Q-", fmt, stmt, opts, TRUE, TRUE, gs, pair=pair, support=sup
                )
                self._emit(
                    "negation", "Q-", fmt, neg, opts, FALSE, FALSE, gs, pair=pair, support=sup
                )
