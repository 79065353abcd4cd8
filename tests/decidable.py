"""An independent check that every probe of a generated dataset has a decidable answer.

For each config and group, the world after the group's requests is rebuilt from scratch (its
base facts changed, the closure recomputed by `compute_closure`, not by the generator's
incremental delta), and every probe's recorded answers are recomputed from the two worlds:

- cloze / qa probes asking for an object of (subject, relation): the world holds exactly the
  recorded answer before, and exactly the recorded answer after (``match``), or no longer holds
  it (``avoid``, unlearning);
- mcq probes asking for an object: among the options, exactly the recorded answer holds in each
  world (``avoid``: the old answer no longer holds);
- reverse mcq probes whose options are subjects: exactly the recorded subject holds the asked
  value in each world;
- comparison: "yes" exactly when the two subjects' value sets are equal, in each world;
- negation: "true" exactly when the stated fact (or, for the negated sentence, its absence)
  holds, in each world.

Returns the failures as readable strings (empty: every answer is decidable and recorded).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ksmith.data.graphs import dataset_graphs
from ksmith.data.readers import list_configs, list_profile_configs, load_probes, load_requests
from ksmith.graph.world import World, build_world
from ksmith.render.text import COMPARISON_CUE, FALSE, NO, TF_CUE, TRUE, YES, Renderer, reasoned


def _after_world(world: World, requests: list[dict[str, Any]]) -> World:
    """The world with the requests applied, closure rebuilt from scratch."""
    ids = {}
    for i, f in enumerate(world.base_facts):
        ids[(f.subject, f.relation, f.object)] = i
    base = list(world._base)
    eid = world._ents.index
    drop = set()
    for r in requests:
        i = ids[(r["subject"], r["relation"], r["object"])]
        if r["kind"] == "unlearn":
            drop.add(i)
        else:
            s, rel, _ = base[i]
            base[i] = (s, rel, eid[r["new_object"]])
    keep = [i for i in range(len(base)) if i not in drop]
    return World(
        world.spec,
        world.size,
        world._ents,
        [base[i] for i in keep],
        [world._base_ids[i] for i in keep],
    )


def _vals(w: World, s: str, r: str) -> set[str]:
    return set(w.objects(s, r))


def _binary(b: str, a: str, avoid: bool, want_b: str, want_a: str) -> str | None:
    """Recorded (before, after) of a yes/no or true/false probe against the worlds' answers;
    ``avoid`` records the old answer as the one that must no longer come."""
    if b != want_b:
        return f"answer before {b!r}, the world says {want_b!r}"
    if avoid:
        return None if a == b and want_a != a else f"avoids {a!r}, the world after says {want_a!r}"
    return None if a == want_a else f"answer after {a!r}, the world says {want_a!r}"


def _check_probe(p: dict[str, Any], req: dict[str, Any], w0: World, w1: World, rd: Renderer):
    """None if the probe's answers are what the two worlds say, else why not."""
    s, r, o = p["subject"], p["relation"], p["object"]
    b, a, avoid = p["answer_before"], p["answer_after"], p["expect_after"] == "avoid"
    typ, fmt, opts = p["type"], p["format"], list(p["options"])
    if typ == "negation":
        cue = TF_CUE if reasoned(len(_vals(w0, s, r))) else ""
        if p["cue"] != cue:  # reasoned exactly as the corpus's true/false lines of (s, r)
            return f"cue {p['cue']!r}, expected {cue!r}"
        stated = [o, req["new_object"], *w0.range_values(r, s)]
        for x in dict.fromkeys(stated):
            if not x:
                continue
            for sentence, positive in (
                (rd.statement(r, s, x), True),
                (rd.negation(r, s, x), False),
            ):
                if p["prompt"] == rd.tf_prompt(sentence):
                    want_b = TRUE if w0.holds(s, r, x) == positive else FALSE
                    want_a = TRUE if w1.holds(s, r, x) == positive else FALSE
                    return _binary(b, a, avoid, want_b, want_a)
        return "negation prompt matches no statement of the fact"
    if typ == "comparison":
        for y in w0.domain_values(r):  # a reasoned probe's cue follows the model's recall
            asked = rd.comparison(r, s, y) + ("" if p["cue"] else f" {COMPARISON_CUE}")
            if p["prompt"] == asked:
                cue = COMPARISON_CUE if reasoned(len(_vals(w0, s, r)), len(_vals(w0, y, r))) else ""
                if p["cue"] != cue:
                    return f"cue {p['cue']!r}, expected {cue!r}"
                want_b = YES if _vals(w0, s, r) == _vals(w0, y, r) else NO
                want_a = YES if _vals(w1, s, r) == _vals(w1, y, r) else NO
                return _binary(b, a, avoid, want_b, want_a)
        return "comparison prompt names no second subject"
    if typ == "reverse" and s in (a, b):  # options are subjects holding an asked value
        v = o if req["kind"] == "unlearn" else req["new_object"]
        held0 = {x for x in opts if w0.holds(x, r, v)}
        held1 = {x for x in opts if w1.holds(x, r, v)}
        if held0 != {b}:
            return f"options holding {v!r} before: {sorted(held0)}, recorded {b!r}"
        if avoid:
            return f"{a!r} still holds {v!r} after" if a in held1 else None
        return None if held1 == {a} else f"options holding {v!r} after: {sorted(held1)}"
    before, after = _vals(w0, s, r), _vals(w1, s, r)
    if fmt == "mcq":
        before &= set(opts)
        after &= set(opts)
    if before != {b}:
        return f"true answers before {sorted(before)}, recorded {b!r}"
    if avoid:
        return f"{a!r} still true after" if a in after or a != b else None
    return None if after == {a} else f"true answers after {sorted(after)}, recorded {a!r}"


def _graphs(dataset: Path) -> Iterator[tuple[World, Renderer]]:
    for g in dataset_graphs(dataset):  # the worlds the dataset's spec.yaml rebuilds
        yield build_world(g.spec, g.size), Renderer(g.spec)


def undecidable_probes(dataset: str | Path, *, profile: bool = True) -> list[str]:
    """Every probe of `dataset` whose recorded answers the two worlds do not give."""
    dataset = Path(dataset)
    worlds = {w.spec.domain: (w, rd) for w, rd in _graphs(dataset)}
    configs = list_configs(dataset) + (list_profile_configs(dataset) if profile else [])
    bad = []
    for config in configs:
        w0, rd = worlds[config.split(".")[0]]
        requests = load_requests(dataset, config)
        by_group: dict[int, list[dict[str, Any]]] = {}
        for r in requests:
            by_group.setdefault(r["group"], []).append(r)
        req_by_id = {(r["group"], r["request_id"]): r for r in requests}
        after = {g: _after_world(w0, rs) for g, rs in by_group.items()}
        for p in load_probes(dataset, config):
            why = _check_probe(
                p, req_by_id[(p["group"], p["request_id"])], w0, after[p["group"]], rd
            )
            if why is not None:
                bad.append(f"{config} {p['id']} ({p['type']} {p['format']}): {why}")
    return bad
