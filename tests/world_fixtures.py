"""A tiny dataset folder in the contract's layout (docs/contracts.md, sections 1 and 3).

Written by tests that need a world before the real generator is involved: 18 animals, two
relations, every word in `conftest.WORDS` so the conftest tokenizer can read it too.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

NAMES = (
    "bira tolan mesu karo vindel lumo sapi dorat fenu gali hoka jiru kemo lani moru nesa opi paku"
).split()
FOODS = ["grass", "meat", "fish", "seeds", "insects"]
PLACES = ["forest", "desert", "ocean", "river", "mountain"]
RELATIONS = {
    # relation: (values, statement prompt, question prompt, paraphrase prompt)
    "eats": (FOODS, "{s} eats", "question : what does {s} eat ? answer :", "the {s} does eat"),
    "lives_in": (
        PLACES,
        "{s} lives in the",
        "question : where does {s} live ? answer :",
        "the {s} does live in the",
    ),
}
FINGERPRINT = "f" * 64

PROBE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("group", pa.int32()),
        ("request_id", pa.string()),
        ("kind", pa.string()),
        ("level", pa.string()),
        ("type", pa.string()),
        ("qset", pa.string()),
        ("format", pa.string()),
        ("prompt", pa.string()),
        ("cue", pa.string()),
        ("options", pa.list_(pa.string())),
        ("answer_before", pa.string()),
        ("answer_after", pa.string()),
        ("expect_after", pa.string()),
        ("hops", pa.int32()),
        ("subject", pa.string()),
        ("relation", pa.string()),
        ("object", pa.string()),
        ("pair_id", pa.string()),
        ("support", pa.list_(pa.string())),
    ]
)


def world_facts(n_subjects: int = len(NAMES), seed: int = 0) -> list[tuple[str, str, str]]:
    """(subject, relation, object) base facts, deterministic from `seed`."""
    rng = random.Random(seed)
    return [
        (s, rel, rng.choice(values))
        for s in NAMES[:n_subjects]
        for rel, (values, *_t) in RELATIONS.items()
    ]


def _probe(
    config_kind: str,
    group: int,
    rid: str,
    ptype: str,
    qset: str,
    fmt: str,
    prompt: str,
    fact: tuple[str, str, str],
    new: str,
    options: list[str],
) -> dict:
    s, rel, o = fact
    unlearn = config_kind == "unlearn"
    after = o if (unlearn or qset == "Q-") else new
    return {
        "id": f"{rid}.{ptype}.{fmt}.0",
        "group": group,
        "request_id": rid,
        "kind": config_kind,
        "level": "leaf",
        "type": ptype,
        "qset": qset,
        "format": fmt,
        "prompt": prompt,
        "cue": "",
        "options": options,
        "answer_before": o,
        "answer_after": after,
        "expect_after": "avoid" if unlearn and qset == "Q+" else "match",
        "hops": 0,
        "subject": s,
        "relation": rel,
        "object": o,
        "pair_id": "",
        "support": [f"{s}|{rel}|{o}"],
    }


def _probes_for(
    kind: str, facts: list[tuple[str, str, str]], k: int, groups: int, seed: int
) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for g in range(groups):
        chosen = rng.sample(range(len(facts)), k + 1)
        others = facts[chosen[-1]]
        for r, idx in enumerate(chosen[:k]):
            fact = facts[idx]
            s, rel, o = fact
            values, stmt, question, para = RELATIONS[rel]
            new = next(v for v in values if v != o)
            rid = f"g{g}.r{r}"
            options = sorted({o, new, *[v for v in values if v not in (o, new)][:2]})
            rows += [
                _probe(kind, g, rid, "direct", "Q+", "cloze", stmt.format(s=s), fact, new, []),
                _probe(
                    kind, g, rid, "direct", "Q+", "mcq", question.format(s=s), fact, new, options
                ),
                _probe(kind, g, rid, "direct", "Q+", "qa", question.format(s=s), fact, new, []),
                _probe(kind, g, rid, "paraphrase", "Q+", "cloze", para.format(s=s), fact, new, []),
            ]
            os_, orel, _oo = others
            row = _probe(
                kind,
                g,
                rid,
                "contextual",
                "Q-",
                "cloze",
                RELATIONS[orel][1].format(s=os_),
                others,
                new,
                [],
            )
            row["id"] = f"{rid}.contextual.cloze.0"
            rows.append(row)
    return rows


def write_world_dataset(
    root: str | Path,
    *,
    n_subjects: int = len(NAMES),
    seed: int = 0,
    configs: tuple[str, ...] = ("biology.edit.leaf.k1", "biology.unlearn.leaf.k2"),
    groups: int = 2,
    fingerprint: str = FINGERPRINT,
) -> Path:
    """Write a dataset folder with a corpus, probe configs and a card; returns `root`."""
    root = Path(root)
    facts = world_facts(n_subjects, seed)
    corpus = []
    for s, rel, o in facts:
        _values, stmt, question, _para = RELATIONS[rel]
        corpus.append(
            {
                "domain": "biology",
                "subject": s,
                "fact_id": f"{s}|{rel}|{o}",
                "kind": "description",
                "text": f"{stmt.format(s=s)} {o} .",
            }
        )
        corpus.append(
            {
                "domain": "biology",
                "subject": s,
                "fact_id": f"{s}|{rel}|{o}",
                "kind": "question",
                "text": f"{question.format(s=s)} {o}",
            }
        )
    (root / "data" / "corpus").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(corpus), root / "data" / "corpus" / "train.parquet")
    counts = {}
    for i, config in enumerate(configs):
        _domain, kind, _level, scale = config.split(".")
        rows = _probes_for(kind, facts, int(scale[1:]), groups, seed + i)
        (root / "data" / config).mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.Table.from_pylist(rows, schema=PROBE_SCHEMA), root / "data" / config / "test.parquet"
        )
        counts[config] = {
            "requests": int(scale[1:]) * groups,
            "probes": len(rows),
            "groups": groups,
        }
    meta = {
        "configs": [
            {
                "config_name": "corpus",
                "data_files": [{"split": "train", "path": "data/corpus/train.parquet"}],
            }
        ]
        + [
            {"config_name": c, "data_files": [{"split": "test", "path": f"data/{c}/test.parquet"}]}
            for c in configs
        ],
        "ksmith": {
            "suite": "fixture",
            "format_version": 1,
            "ksmith_version": "0.1.0",
            "counts": counts,
            "fingerprint": fingerprint,
        },
    }
    (root / "README.md").write_text(
        "---\n" + yaml.safe_dump(meta, sort_keys=True) + "---\n\n# fixture world\n"
    )
    return root
