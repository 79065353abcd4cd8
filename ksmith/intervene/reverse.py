"""Reverse probes: ask the updated fact from the object's side, with a unique answer.

"Who holds o'?" usually has several true answers when the relation is not one-to-one (after an
edit s -> o', s holds o' and so does every earlier holder b). A reverse probe is emitted only
when its expected answers are unique in both worlds:

1. **Through a declared inverse.** If r has an inverse q in the spec and s has exactly one r value
   before (o) and after (o' for an edit, none for unlearn), the probe asks q with its reverse
   template about s ("The home of s is"): q(x, s) holds iff r(s, x), so the answer is o before and
   o' after (unlearn: o, to be avoided). All formats; mcq distractors are values of r's range
   that s holds in neither world.
2. **Otherwise, multiple choice only.** The prompt asks r's reverse template about a value v
   (edit: v = o'; unlearn: v = o), and the 4 options contain exactly one subject that holds v
   after the update (edit: s; unlearn: none, s is the answer to avoid) and exactly one that holds
   it before (unlearn: s; edit: a subject the group moved away from o', when there is one);
   the other options hold v in neither world. When no option can be the unique answer before,
   the probe is skipped. Cloze and qa forms cannot restrict the answers and are not emitted.
"""

from __future__ import annotations

from dataclasses import dataclass

from ksmith.intervene.worlds import holds_after, values_after


@dataclass(frozen=True)
class ReversePlan:
    """A reverse probe to emit: prompt, answers, options (mcq) and the formats it may take."""

    prompt: str
    before: str
    after: str
    options: list[str]
    formats: tuple[str, ...]


def plan_reverse(b, req) -> ReversePlan | None:
    """The reverse probe of `req` for builder `b` (a `ProbeBuilder`), or None (see module doc)."""
    f = req.fact
    s, r, o = f.subject, f.relation, f.object
    ix, diff = b.ix, b.diff
    inverse = b.inverse.get(r)
    before_vals = ix.values((s, r))
    after_vals = values_after(ix, diff, (s, r))
    after = req.new_object if req.kind == "edit" else o
    if (
        inverse is not None
        and before_vals == [o]
        and after_vals == ([after] if req.kind == "edit" else [])
    ):
        opts = b.options([o, after], ix.range_of(r, s), set(before_vals) | set(after_vals))
        return ReversePlan(b.rd.reverse(inverse, s), o, after, opts, tuple(b.formats))
    if "mcq" not in b.formats:
        return None
    asked = req.new_object if req.kind == "edit" else o
    if req.kind == "unlearn":
        before = s
    else:  # a subject that held o' before and does not after (moved by another request)
        moved = b.lost_holders(r, asked)
        before = next((x for x in moved if x != s), None)
        if before is None:
            return None
    opts = [s] if before == s else [s, before]
    pool = ix.subjects_by_rel_level.get((r, req.level), [])
    exclude: set[str] = set(opts)
    tries = 0
    while len(opts) < 4 and tries < 32 and pool:
        x = pool[b.rng.below(len(pool))]
        tries += 1
        if x in exclude:
            continue
        exclude.add(x)
        if ix.holds(x, r, asked) or holds_after(ix, diff, r, asked, x):
            continue
        opts.append(x)
    if len(opts) < 4:
        return None
    b.rng.shuffle(opts)
    return ReversePlan(b.rd.reverse(r, asked), before, s, opts, ("mcq",))
