"""The dataset's tables: column names, arrow types and a description of every field.

docs/contracts.md sections 1-3 are the binding definition; this module is its code form. The
descriptions are rendered into the dataset card, so the card and the schema cannot drift apart.
"""

from __future__ import annotations

import pyarrow as pa

# Bump when the layout or the meaning of any generated field changes: it enters the fingerprint.
# 2: reverse probes only with unique answers (ksmith.intervene.reverse); lazy random orders and
#    fast draws in sampling and probes (same distributions, other bytes); corpus unchanged.
# 3: the corpus recipe of ksmith.render.corpus (descriptions, reverse, comparison, in-context
#    lines; a `kind` column); paraphrases held out per fact, paraphrase_unseen probes; profile
#    configs.
# 4: cloze and qa probes only where (subject, relation) has one value in each world (every
#    probe's answer decidable; ksmith.intervene.probes); spec fingerprints keep the declared
#    order of relations and value types (ksmith.spec.canonical); negation probes balanced (a
#    false statement of each unaffected fact beside its true one).
# 5: reasoned negation and comparison (a `cue` column; true/false and comparison lines write
#    the recall of the facts asked before the answer, Allen-Zhu & Li Part 3.2); comparison
#    lines in the corpus.
FORMAT_VERSION = "5"

_S = pa.string()
_I = pa.int32()
_L = pa.list_(pa.string())

CORPUS_FIELDS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("domain", _S, "graph domain"),
    ("subject", _S, "the entity the line is about (its facts' subject)"),
    ("fact_id", _S, 'ids of the facts the line states, space-separated ("" for none)'),
    (
        "kind",
        _S,
        "description, question, reverse, truefalse, comparison or in_context "
        "(ksmith.render.corpus)",
    ),
    (
        "text",
        _S,
        "one training line; a fact's held-out paraphrase and a relation's unseen template "
        "never appear",
    ),
)

REQUEST_FIELDS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("group", _I, "repetition index; each group is applied to a fresh copy of the model"),
    ("request_id", _S, "unique within the config, e.g. `g0.r3`"),
    ("kind", _S, "`edit` or `unlearn`"),
    ("level", _S, "`root`, `intermediate` or `leaf`: level of the subject node"),
    ("subject", _S, "subject of the base fact being changed"),
    ("relation", _S, "relation of the base fact being changed"),
    ("object", _S, "object of the base fact before the update (the old value)"),
    ("new_object", _S, 'the new value (edit); "" for unlearn'),
    (
        "prompt",
        _S,
        "training-template cloze prompt, subject filled, ends before the answer, no trailing space",
    ),
    ("plus_prompts", _L, "Q+ training view: training-template prompts of this fact"),
    (
        "plus_answers",
        _L,
        "answers to plus_prompts (edit: the new object; unlearn: the old object, to be forgotten)",
    ),
    (
        "minus_prompts",
        _L,
        "Q- training view (retain set): prompts of unaffected facts, disjoint from every "
        "evaluation probe's fact",
    ),
    ("minus_answers", _L, "answers to minus_prompts (unchanged by the update)"),
)

PROBE_FIELDS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("id", _S, "unique within the config, e.g. `g0.r3.direct.cloze.0`"),
    ("group", _I, "repetition index (scored on its group's updated model)"),
    ("request_id", _S, "the request this probe was derived for"),
    ("kind", _S, "as the request"),
    ("level", _S, "as the request"),
    (
        "type",
        _S,
        "`direct`, `paraphrase`, `reverse`, `multi_hop`, `comparison`, `contextual` or `negation`",
    ),
    ("qset", _S, "`Q+` (must change) or `Q-` (must stay)"),
    ("format", _S, "`mcq`, `cloze` or `qa`"),
    ("prompt", _S, "the model input; the answer continues it after ONE space"),
    (
        "cue",
        _S,
        "reasoned probes (negation, comparison): the model first continues the prompt greedily "
        'with its own recall of the facts asked, up to this cue ("Answer:", "Same answer?"), '
        'and the answer is scored after prompt + recall + " " + cue; "" for the others',
    ),
    (
        "options",
        _L,
        'mcq: the options (4; negation `["true", "false"]`, comparison `["yes", "no"]`); else []',
    ),
    ("answer_before", _S, "the correct answer before the update"),
    (
        "answer_after",
        _S,
        "the correct answer after the update; for unlearn Q+ the old answer, which must no "
        "longer come",
    ),
    ("expect_after", _S, "`match` (answer_after must be produced) or `avoid` (unlearn Q+)"),
    ("hops", _I, "0 for direct facts; derivation length for multi_hop"),
    ("subject", _S, "subject of the fact the probe asks about"),
    ("relation", _S, "relation of the fact the probe asks about"),
    ("object", _S, "object of the fact the probe asks about, as before the update"),
    (
        "pair_id",
        _S,
        'conflict pair id, "" if none: both probes of a pair must be answered consistently',
    ),
    ("support", _L, "ids of the base facts the asked fact rests on"),
)


def _schema(fields: tuple[tuple[str, pa.DataType, str], ...]) -> pa.Schema:
    return pa.schema([pa.field(name, typ, nullable=False) for name, typ, _ in fields])


CORPUS_SCHEMA = _schema(CORPUS_FIELDS)
REQUEST_SCHEMA = _schema(REQUEST_FIELDS)
PROBE_SCHEMA = _schema(PROBE_FIELDS)

CORPUS_COLUMNS = tuple(n for n, _, _ in CORPUS_FIELDS)
REQUEST_COLUMNS = tuple(n for n, _, _ in REQUEST_FIELDS)
PROBE_COLUMNS = tuple(n for n, _, _ in PROBE_FIELDS)

PROBE_TYPES = (
    "direct",
    "paraphrase",
    "paraphrase_unseen",
    "reverse",
    "multi_hop",
    "comparison",
    "contextual",
    "negation",
)
FORMATS = ("mcq", "cloze", "qa")

# Split names in the card's `configs:` (the parquet file names follow the contract).
CORPUS_SPLIT = "train"
PROBE_SPLIT = "test"
REQUEST_SPLIT = "train"


def config_name(domain: str, kind: str, level: str, scale: int) -> str:
    """`<domain>.<kind>.<level>.k<scale>`, e.g. ``biology.edit.leaf.k10``."""
    return f"{domain}.{kind}.{level}.k{scale}"


def profile_name(domain: str, level: str) -> str:
    """`<domain>.profile.<level>`: a capability-profile config (`ksmith.data.generate`)."""
    return f"{domain}.profile.{level}"
