"""Hand-made inputs for the leaderboard tests: a tiny dataset folder and evaluation folders.

The dataset follows docs/contracts.md sections 1 and 3 (card written with the real
`ksmith.data.card.render_card`, probes with `ksmith.data.PROBE_SCHEMA`). An evaluation folder
(section 6) is what `ksmith evaluate` would write for a *simulated* model: a deterministic rule
decides each answer, and the rows, flags and metrics come from the evaluator's own code
(`scoring.stage_rows`, `metrics.compute_metrics`, `cost.cost_metrics`), so the fixture cannot
drift from the real definitions.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SUITE = "tinyzoo"
DOMAIN = "zoo"
SUBJECTS = ["bira", "tolan", "mesu", "karo", "vindel", "lumo", "sapi", "dorat"]
FOODS = ["grass", "meat", "fish", "seeds"]
CONFIGS = (
    f"{DOMAIN}.edit.leaf.k1",
    f"{DOMAIN}.edit.leaf.k4",
    f"{DOMAIN}.edit.root.k1",
    f"{DOMAIN}.unlearn.leaf.k1",
)


def fingerprint(seed: int = 0) -> str:
    return hashlib.sha256(f"{SUITE}/{seed}".encode()).hexdigest()


def _probe(pid: str, group: int, rid: str, kind: str, level: str, **kw: Any) -> dict[str, Any]:
    row = {
        "id": pid,
        "group": group,
        "request_id": rid,
        "kind": kind,
        "level": level,
        "cue": "",
        "options": [],
        "expect_after": "match",
        "hops": 0,
        "pair_id": "",
        "support": [],
    }
    row.update(kw)
    return row


def make_probes(config: str) -> list[dict[str, Any]]:
    """Probes of one config: 2 groups of k requests, every type the headline metrics use."""
    domain, kind, level, k = config.split(".")
    k = int(k[1:])
    probes = []
    for g in range(2):
        for r in range(k):
            i = (g * k + r) % len(SUBJECTS)
            s, other = SUBJECTS[i], SUBJECTS[(i + 3) % len(SUBJECTS)]
            old, new = FOODS[i % 4], FOODS[(i + 1) % 4]
            after = new if kind == "edit" else old
            expect = "match" if kind == "edit" else "avoid"
            rid = f"g{g}.r{r}"
            fact = {"subject": s, "relation": "eats", "object": old}
            plus = {
                "qset": "Q+",
                "answer_before": old,
                "answer_after": after,
                "expect_after": expect,
                **fact,
            }
            base = dict(group=g, rid=rid, kind=kind, level=level)
            probes += [
                _probe(
                    f"{rid}.direct.cloze.0",
                    **base,
                    type="direct",
                    format="cloze",
                    prompt=f"{s} eats",
                    pair_id=f"{rid}.p0",
                    **plus,
                ),
                _probe(
                    f"{rid}.direct.mcq.0",
                    **base,
                    type="direct",
                    format="mcq",
                    prompt=f"question : what does {s} eat ? answer :",
                    options=FOODS,
                    **plus,
                ),
                _probe(
                    f"{rid}.direct.qa.0",
                    **base,
                    type="direct",
                    format="qa",
                    prompt=f"what does {s} eat ?",
                    **plus,
                ),
                _probe(
                    f"{rid}.paraphrase.cloze.0",
                    **base,
                    type="paraphrase",
                    format="cloze",
                    prompt=f"the {s} does eat",
                    **plus,
                ),
                _probe(
                    f"{rid}.reverse.mcq.0",
                    **base,
                    type="reverse",
                    format="mcq",
                    prompt=f"who eats {after} ?",
                    options=FOODS,
                    pair_id=f"{rid}.p0",
                    **plus,
                ),
                _probe(
                    f"{rid}.multi_hop.cloze.0",
                    **base,
                    type="multi_hop",
                    format="cloze",
                    prompt=f"the young of {s} eat",
                    hops=1,
                    **plus,
                ),
                _probe(
                    f"{rid}.contextual.cloze.0",
                    **base,
                    type="contextual",
                    format="cloze",
                    prompt=f"{other} lives in the",
                    qset="Q-",
                    answer_before="forest",
                    answer_after="forest",
                    subject=other,
                    relation="lives_in",
                    object="forest",
                ),
                _probe(
                    f"{rid}.contextual.mcq.0",
                    **base,
                    type="contextual",
                    format="mcq",
                    prompt=f"question : what does {other} eat ? answer :",
                    options=FOODS,
                    qset="Q-",
                    answer_before=FOODS[0],
                    answer_after=FOODS[0],
                    subject=other,
                    relation="eats",
                    object=FOODS[0],
                ),
            ]
    return probes


def make_dataset(folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny dataset folder; its fingerprint is `fingerprint(seed)`."""
    from ksmith.data import PROBE_SCHEMA
    from ksmith.data.card import CardInfo, render_card

    folder = Path(folder)
    counts = {}
    for config in CONFIGS:
        probes = make_probes(config)
        path = folder / "data" / config / "test.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(probes, schema=PROBE_SCHEMA), path)
        groups = {p["group"] for p in probes}
        counts[config] = {
            "requests": len({(p["group"], p["request_id"]) for p in probes}),
            "probes": len(probes),
            "groups": len(groups),
        }
    info = CardInfo(
        suite=SUITE,
        fingerprint=fingerprint(seed),
        format_version="1",
        ksmith_version="0.1.0",
        seed=seed,
        size="tiny",
        spec_yaml="name: tinyzoo\n",
        corpus_lines=0,
        counts=counts,
    )
    (folder / "README.md").write_text(render_card(info))
    return folder


def _hit(*parts: Any) -> float:
    """A deterministic pseudo-random number in [0, 1) from `parts`."""
    return zlib.crc32("/".join(map(str, parts)).encode()) / 2**32


def simulated_answer(p: dict[str, Any], stage: str, skill: float, method: str) -> str:
    """What the simulated model says: the right answer of the stage with probability `skill`
    (the before model knows 90%; Q- answers survive the update with probability `skill`)."""
    right = p["answer_before"] if stage == "before" or p["qset"] == "Q-" else p["answer_after"]
    if p["expect_after"] == "avoid" and stage == "after" and p["qset"] == "Q+":
        right = "nothing"  # forgotten
    chance = 0.9 if stage == "before" else skill
    if _hit(method, stage, p["id"]) < chance:
        return right if right != "nothing" or p["format"] != "mcq" else p["options"][-1]
    wrong = [f for f in FOODS if f not in (p["answer_before"], p["answer_after"])]
    return wrong[int(_hit("w", method, p["id"]) * len(wrong))]


def judgements(probes, stage: str, skill: float, method: str) -> list[dict[str, Any]]:
    """Judgements in `ksmith.evaluate.scoring.judge_probes`' format, for the simulated model."""
    from ksmith.evaluate.scoring import MODES_BY_FORMAT, contains_match, exact_match

    out = []
    for p in probes:
        said = simulated_answer(p, stage, skill, method)
        a_b, a_a = p["answer_before"], p["answer_after"]
        for mode in MODES_BY_FORMAT[p["format"]]:
            if mode == "mcq":
                m_b, m_a = said == a_b, said == a_a
                s_b, s_a = (-0.1 if m_b else -2.0), (-0.1 if m_a else -2.0)
            elif mode == "cloze":
                m_b, m_a = said == a_b, said == a_a
                s_b, s_a = float(m_b), float(m_a)
            else:
                text = said
                match = exact_match if mode == "gen_exact" else contains_match
                m_b, m_a = match(text, a_b), match(text, a_a)
                s_b, s_a = float(m_b), float(m_a)
            out.append(
                {
                    "probe_id": p["id"],
                    "group": p["group"],
                    "mode": mode,
                    "prediction": said,
                    "score_before": s_b,
                    "score_after": s_a,
                    "match_before": m_b,
                    "match_after": m_a,
                }
            )
    return out


def make_update(folder: str | Path, method: str, *, seed: int = 0, lr: float = 0.1) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from ksmith.methods import METHODS, load_builtin_methods

    load_builtin_methods()
    # A registered method's parameters are its own (verify checks them); others are external.
    params = {} if method in METHODS or method == "none" else {"lr": lr, "seed": seed}
    record = {
        "method": method,
        "kind": "edit",
        "params": params,
        "model": {"path": "models/world", "fingerprint": "m" * 8},
        "seed": seed,
        "wall_seconds": [1.5, 2.5],
        "peak_memory_bytes": [1000, 1200],
        "changed_parameters": [64, 64],
        "ksmith_version": "0.1.0",
    }
    (folder / "update.json").write_text(json.dumps(record))
    return folder


def make_results(
    folder: str | Path,
    dataset: str | Path,
    config: str,
    method: str,
    *,
    skill: float = 0.8,
    update: str | Path | None = None,
    seed: int = 0,
    n_boot: int = 1000,
) -> Path:
    """An evaluation folder (contract section 6) for `method` on `config` of `dataset`."""
    from ksmith.data import load_probes, read_card
    from ksmith.evaluate.cost import cost_metrics
    from ksmith.evaluate.metrics import compute_metrics
    from ksmith.evaluate.scoring import PREDICTION_COLUMNS, stage_rows

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probes = sorted(load_probes(dataset, config), key=lambda p: (int(p["group"]), p["id"]))
    before = judgements(probes, "before", 0.9, method)
    after = judgements(probes, "after", skill, method)
    rows = stage_rows(probes, before, "before") + stage_rows(probes, after, "after", before)
    schema_types = {
        "group": pa.int32(),
        "score": pa.float64(),
        "correct": pa.bool_(),
        "changed": pa.bool_(),
        "match_before": pa.bool_(),
        "match_after": pa.bool_(),
    }
    schema = pa.schema([(c, schema_types.get(c, pa.string())) for c in PREDICTION_COLUMNS])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "predictions.parquet")
    _, kind, level, k = config.split(".")
    metrics = compute_metrics(probes, rows, kind=kind, seed=seed, n_boot=n_boot)
    update_info = json.loads((Path(update) / "update.json").read_text()) if update else None
    metrics.update(cost_metrics(update_info, 2, seed=seed, n_boot=n_boot))
    metrics["fluency@generation"] = {"value": 4.5, "ci": [4.0, 5.0], "n": 4, "mode": "generation"}
    record = {
        "config": config,
        "method": method,
        "kind": kind,
        "level": level,
        "scale": int(k[1:]),
        "metrics": dict(sorted(metrics.items())),
    }
    (folder / "metrics.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    card = read_card(dataset)
    ev = {
        "model": {"path": "models/world", "fingerprint": "m" * 8},
        "update": None if update is None else str(update),
        "method": method,
        "dataset": {"path": str(dataset), "fingerprint": card["fingerprint"]},
        "config": config,
        "backend": "hf",
        "options": {"seed": seed, "n_boot": n_boot},
        "kind": kind,
        "level": level,
        "scale": int(k[1:]),
        "versions": {"ksmith": "0.1.0"},
    }
    (folder / "eval.json").write_text(json.dumps(ev, indent=2, sort_keys=True))
    return folder


def make_submission(
    tmp: Path,
    dataset: Path,
    sub_id: str,
    method: str,
    *,
    skill: float = 0.8,
    configs: tuple[str, ...] = CONFIGS,
    board: Path | None = None,
) -> Path:
    """Evaluate `method` on `configs` (simulated) and submit into BOARD/submissions/<id>."""
    from ksmith.leaderboard import SubmitOptions, write_submission

    update = make_update(tmp / f"upd-{sub_id}", method)
    results = [
        make_results(tmp / f"res-{sub_id}-{c}", dataset, c, method, skill=skill, update=update)
        for c in configs
    ]
    out = (board or tmp / "leaderboard") / "submissions" / sub_id
    write_submission(results, out, SubmitOptions(method_url="https://example.org/paper"))
    return out


def tree_digest(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under `folder` (to prove nothing changed)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
