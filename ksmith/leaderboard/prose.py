"""The board's fixed text, shared by the Markdown and HTML pages: the introduction, the
composite score's definition (with its components per kind) and the note on model profiles."""

from __future__ import annotations

from ksmith.leaderboard.aggregate import COMPONENTS, KIND_TITLES

INTRO = """\
Knowledge editing and machine unlearning, measured on one released ksmith dataset. Every number
below was **recomputed** by `ksmith leaderboard verify` from the submission's per-probe
predictions against the dataset's own expected answers; submissions whose numbers, flags,
dataset fingerprint or cells do not check out are rejected, and so are copies of another
submission's predictions. Only submissions covering every cell of the suite for a kind are
ranked; partial ones are listed apart with their coverage. Metrics that need the model itself
(fluency, drift, general capability) and the update cost (`update s`: mean wall seconds per
group, averaged over cells) are self-reported; the Metrics table says which is which. Names
read `<metric>[.<slice>]@<mode>`, the mode being how probes were scored (mcq, cloze, gen_exact,
gen_contains; `any`: any of them).

To submit: evaluate with `ksmith evaluate`, then
`ksmith submit RESULTS_DIR [RESULTS_DIR ...] --out leaderboard/submissions/<id> --dataset DIR`,
run `ksmith leaderboard verify leaderboard/submissions/<id>` and `ksmith leaderboard build`, and
open a pull request. The format is described by `submission.schema.json`."""


COMPOSITE_DOC = """\
**Composite score.** Each component metric is put on a higher-is-better [0, 1] scale using its
direction from the metric registry (`v` if higher is better, `1 - v` if lower is better). A
cell's composite (one dataset config: domain, kind, level, scale) is the *harmonic mean* of its
components; a row's composite is the mean over the cells it covers (the `cells` column). Like F1,
the harmonic mean is high only when every component is high, so an update cannot buy rank by
trading one property for another: editing that over-spreads (high efficacy, poor locality) or
unlearning that under-spreads (the direct fact gone, entailed facts kept), the trade-offs
KnowledgeSmith (arXiv 2510.02392) reports, both score low. A component with no applicable probes
in a cell is left out of that cell's mean. Each component is taken whole (no slice) in the first
scoring mode that has a value, cloze first (the metric module's headline order). Every table
also shows the components, averaged over the same cells, in their own units and directions (↑
higher is better, ↓ lower is better). Rows compare only within one dataset (fingerprint); rows
covering different cells are not strictly comparable, so check `cells`.

**Sample sizes.** A cell's component rests on that cell's probes of its type: a handful at k=1
(3 to 6 per component in a default-suite cell, so one miss moves it by 0.17 to 0.33 and a
single zero zeroes that cell's harmonic mean), a hundred or more at k=100. A row's composite
therefore reads as an average over its `cells`, never as one cell's verdict; the page shows
each row's 95% bootstrap interval over its cells (seeded), and per-probe predictions remain in
every submission for a closer look.

**Against the retain model.** Unlearning tables also show, beside the composite and never in
it, how the unlearned model compares with the *retain model*: the same world model trained
without the forget set, the counterfactual an unlearning method should approach.
`forget_quality` is TOFU's forget quality (arXiv 2401.06121: the Kolmogorov-Smirnov p-value
between the two models' truth ratios on the forget facts; higher means indistinguishable from
the retain model) and `retain_agreement` the share of probes (forget, entailed and kept facts)
the unlearned model answers as the retain model does. Each is the mean over the row's cells that
have it; `–` marks a submission evaluated without the retain model. `verify` recomputes both,
and every other metric against the retain model, from the per-item token scores and the retain
model's predictions the submission carries.

**Reference row.** The no-update baseline (method `none`: the model evaluated without any
update), when submitted, stands in its place by composite as the row ranked `ref`, never
counted in the ranks: an update below it did worse than doing nothing."""


def composite_components() -> list[str]:
    """One line per kind: its component metrics."""
    return [
        f"{KIND_TITLES[kind]}: " + ", ".join(f"`{n}`" for n in names)
        for kind, names in COMPONENTS.items()
    ]


def composite_doc() -> str:
    """The composite's definition, with its components per kind, as Markdown."""
    return (
        COMPOSITE_DOC
        + "\n\nComponents:\n\n"
        + "\n".join(f"- {line}" for line in composite_components())
    )


MODELS_NOTE = """\
A metric measures an update only where the model could answer the probe before it. Each model's
capability profile before any update, as its card records it (self-reported): per probe type
the least of its cloze and mcq accuracy, `in_context` the same with a counterfactual fact stated
in the prompt, `fluency` its generations' n-gram entropy over its corpus's. A low ability makes
the metrics that need it measure the model's ignorance (for example unlearning of facts it never
knew)."""
