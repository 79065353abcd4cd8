"""Probes for one group of requests, derived from the closure before and after the update.

For each request (s, r, o -> o'), with W the world and W' the world after the group's changes
(known through `group_diff`, never materialized):

| type | set | asks |
|---|---|---|
| direct | Q+ | (s, r) with the training cloze/question templates |
| paraphrase | Q+ | (s, r) in the phrasing this fact is never trained in (`ksmith.render.phrasing`) |
| paraphrase_unseen | Q+ | (s, r) in the relation's template no training line uses |
| reverse | Q+ | the fact from the object's side, with a unique answer (see below) |
| multi_hop | Q+ | derived facts among W.dependents(fact) that differ in W' |
| comparison | Q+ | "same answer for s and y?" for a y whose yes/no flips between W and W' (reasoned: cue "Same answer?") |
| contextual | Q- | unaffected facts: same subject, siblings, parent/children, anywhere |
| negation | Q+/Q- | "True or false: <statement|negation>" of the fact, and of an unaffected fact with its object and with a value it does not hold (true and false answers balanced; reasoned: cue "Answer:") |

Reasoned probes (a `cue`; `ksmith.render.text.reasoned`: keys with at most three values) are
scored after the model's own recall of the facts asked (`ksmith.evaluate.scoring`).

Unlearn Q+ probes keep answer_after = the old answer with expect_after = "avoid" (KnowledgeSmith,
arXiv 2510.02392: unlearning must stop producing the fact, with no new target). Conflict pairs
(same `pair_id`): direct vs reverse (mcq), statement vs negation (per format).

Every probe's answer is decidable: the worlds before and after hold exactly the recorded answers
(tests/decidable.py recomputes them). Cloze and qa probes asking for an object are emitted only
when (subject, relation) has one value in each world (`ProbeBuilder.decidable_open`); mcq probes
always, as their options exclude every other true value. Reverse probes ask for a unique answer in
both worlds: through the relation's declared inverse
when s has one value before and after, else as multiple choice whose options hold exactly one
subject with the asked value after and one before (skipped when there is none); the full rule
is in `ksmith.intervene.reverse`. The probe types that draw facts of their own (multi-hop,
comparison, contextual and retain, negation) are in `ksmith.intervene.probe_types`.
"""

from __future__ import annotations

from ksmith.data.schema import PROBE_COLUMNS
from ksmith.intervene.columns import Columns, Draws
from ksmith.intervene.probe_types import ProbeTypes
from ksmith.intervene.reverse import plan_reverse
from ksmith.intervene.sample import PlannedRequest
from ksmith.intervene.worlds import GroupDiff, WorldIndex, values_after
from ksmith.render.text import Renderer

MATCH, AVOID = "match", "avoid"
_SHARED = ("group", "request_id", "kind", "level")  # one value per request
_OWN = tuple(c for c in PROBE_COLUMNS if c not in _SHARED)  # one value per row


class ProbeBuilder(ProbeTypes):
    """Builds probe rows (columns as `ksmith.data.schema.PROBE_COLUMNS`) for one group."""

    def __init__(self, index: WorldIndex, renderer: Renderer, ispec, diff: GroupDiff, seed: int):
        self.ix = index
        self.rd = renderer
        self.spec = ispec
        self.diff = diff
        self.changed = diff.key_ids
        self.rng = Draws(seed)
        self.types = set(ispec.probe_types)
        self.formats = list(ispec.formats)
        self.inverse = dict(index.world.spec.inverse_pairs())
        self._own: list[tuple] = []  # per-row fields (`_OWN` columns), one tuple per row
        self._shared: list[list] = [[], [], [], []]  # group, request_id, kind, level columns
        self.used: set[int] = set()  # (subject, relation) keys asked by any probe
        self._req: PlannedRequest | None = None
        self._counts: dict[tuple[str, str], int] = {}
        self._lost: dict[tuple[str, str], list[str]] = {}
        self._held: dict[tuple[str, str], set[str]] = {}

    def __len__(self) -> int:
        return len(self._own)

    @property
    def columns(self) -> Columns:
        """The probe rows as columns (`PROBE_COLUMNS` order), transposed in one pass."""
        own = [list(c) for c in zip(*self._own, strict=True)] if self._own else [[] for _ in _OWN]
        by_name = dict(zip(_OWN, own, strict=True))
        by_name.update(zip(_SHARED, self._shared, strict=True))
        return Columns.of(PROBE_COLUMNS, [by_name[n] for n in PROBE_COLUMNS])

    @property
    def rows(self) -> list[tuple]:
        """Row tuples in `PROBE_COLUMNS` order (small outputs and tests)."""
        return self.columns.rows()

    # -- row assembly -----------------------------------------------------------------------

    def _emit(self, type_, qset, fmt, prompt, options, before, after, fact, hops, pair, support,
              cue=""):  # fmt: skip
        """Add one row's own fields (the request's fields follow in `_end_request`)."""
        req = self._req
        n = self._counts.get((type_, fmt), 0)
        self._counts[(type_, fmt)] = n + 1
        unlearn_plus = req.kind == "unlearn" and qset == "Q+"
        self._own.append(
            (
                f"{req.request_id}.{type_}.{fmt}.{n}",
                type_,
                qset,
                fmt,
                prompt,
                cue,
                options,
                before,
                before if unlearn_plus else after,
                AVOID if unlearn_plus else MATCH,
                hops,
                fact[0],
                fact[1],
                fact[2],
                pair,
                support,
            )
        )

    def held(self, subject: str, relation: str) -> set[str]:
        """Values of (subject, relation) in either world (never an mcq distractor); memoized
        for the group."""
        key = (subject, relation)
        got = self._held.get(key)
        if got is None:
            before = self.ix.values(key)
            got = set(before)
            if key in self.diff.added or key in self.diff.removed:
                got.update(values_after(self.ix, self.diff, key))
            self._held[key] = got
        return got

    def lost_holders(self, relation: str, value: str) -> list[str]:
        """Subjects that hold (relation, value) before the update and not after, sorted."""
        got = self._lost.get((relation, value))
        if got is None:
            got = self._lost[(relation, value)] = sorted(
                self.diff.removed_rv.get((relation, value), ())
            )
        return got

    def _end_request(self, req: PlannedRequest) -> None:
        """Fill the request's columns (group .. level) for the rows it emitted, in bulk."""
        n = len(self._own) - len(self._shared[0])
        for c, v in zip(
            self._shared, (req.group, req.request_id, req.kind, req.level), strict=True
        ):
            c.extend([v] * n)

    def options(self, answers: list[str], pool: list[str], exclude: set[str]) -> list[str]:
        """4 options: `answers` (1-2 correct ones) plus distractors from `pool`, shuffled."""
        opts = list(dict.fromkeys(answers))
        banned = exclude | set(opts)
        tries = 0
        below, n = self.rng.below, len(pool)
        while len(opts) < 4 and tries < 24 and pool:
            v = pool[below(n)]
            tries += 1
            if v not in banned:
                opts.append(v)
                banned.add(v)
        if len(opts) < 4:
            opts.extend(v for v in pool if v not in banned)
            opts = opts[:4]
        self.rng.shuffle(opts)
        return opts

    def decidable_open(self, subject: str, relation: str, before: str, after: str, avoid: bool):
        """Whether an open-answer probe (cloze, qa) of (subject, relation) has one true answer:
        the world holds exactly `before`, and after the update exactly `after` (`avoid`,
        unlearning's Q+: the old answer must only no longer come, any other is fine)."""
        key = (subject, relation)
        if self.ix.values(key) != [before]:
            return False
        return avoid or values_after(self.ix, self.diff, key) == [after]

    def _fact_formats(self, type_, qset, fact, prompts, before, after, support, hops=0, pair=""):
        """cloze / qa / mcq probes asking for an object: prompts = {format: prompt}.

        Where (subject, relation) has several true values in either world, only the mcq form
        is emitted: its options exclude every other true value, so its answer is decidable,
        while a cloze or qa answer could be true and still differ from the recorded one."""
        s, r, _ = fact
        sup = sorted(support)
        avoid = qset == "Q+" and self._req.kind == "unlearn"
        open_ok = self.decidable_open(s, r, before, after, avoid)
        for fmt in self.formats:
            if fmt == "mcq":
                opts = self.options([before, after], self.ix.range_of(r, s), self.held(s, r))
            elif not open_ok:
                continue
            else:
                opts = []
            p = pair if fmt == "mcq" else ""
            self._emit(type_, qset, fmt, prompts[fmt], opts, before, after, fact, hops, p, sup)

    def _prompts(self, relation: str, subject: str) -> dict[str, str]:
        q = self.rd.question(relation, subject)
        return {"cloze": self.rd.cloze(relation, subject), "qa": q, "mcq": q}

    # -- per request ------------------------------------------------------------------------

    def add_request(self, req: PlannedRequest) -> None:
        self._req = req
        self._counts = {}
        f = req.fact
        s, r, o = f.subject, f.relation, f.object
        after = req.new_object if req.new_object is not None else o
        fact = (s, r, o)
        support = set(f.support) if f.support else {f.id}
        self.used.add(self.ix.key(s, r))
        reverse = plan_reverse(self, req) if "reverse" in self.types else None
        pair = ""
        if reverse is not None and "direct" in self.types and "mcq" in reverse.formats:
            pair = f"{req.request_id}.reverse"
        if "direct" in self.types:
            self._fact_formats("direct", "Q+", fact, self._prompts(r, s), o, after, support,
                               pair=pair)  # fmt: skip
        if "paraphrase" in self.types:
            paras = [("paraphrase", self.rd.paraphrase(r, s, o)),
                     ("paraphrase_unseen", self.rd.unseen_paraphrase(r, s))]  # fmt: skip
            for type_, p in paras[: self.spec.paraphrases_per_request]:
                if p is not None:
                    prompts = {"cloze": p, "qa": p, "mcq": p}
                    self._fact_formats(type_, "Q+", fact, prompts, o, after, support)
        if reverse is not None:
            sup = sorted(support)
            for fmt in self.formats:
                if fmt in reverse.formats:
                    opts, p = (reverse.options, pair) if fmt == "mcq" else ([], "")
                    self._emit("reverse", "Q+", fmt, reverse.prompt, opts, reverse.before,
                               reverse.after, fact, 0, p, sup)  # fmt: skip
        if "multi_hop" in self.types:
            self._multi_hop(req)
        if "comparison" in self.types:
            self._comparison(req, support)
        if "contextual" in self.types:
            for g in self._unaffected_near(s, self.spec.contextual_per_request):
                gs, gr, go = triple = self.ix.triple(g)
                prompts = self._prompts(gr, gs)
                sup = self.ix.support_ids(g)
                self._fact_formats("contextual", "Q-", triple, prompts, go, go, sup)
        if "negation" in self.types:
            self._negation(req, support)
        self._end_request(req)
