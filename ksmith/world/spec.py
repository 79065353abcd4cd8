"""The world-model spec: architecture, tokenizer and training budget, declared in YAML.

Defaults live in ``specs/world/default.yaml``; ``--set key=value`` overrides one field with the
same type checking as the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ksmith.errors import SpecError
from ksmith.spec.yamlio import load_yaml, read_yaml

DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "specs" / "world" / "default.yaml"


Ability = Literal[
    "direct",
    "paraphrase",
    "paraphrase_unseen",
    "reverse",
    "multi_hop",
    "comparison",
    "negation",
    "contextual",
    "in_context",
    "fluency",
]
# The corpus's line kinds (`ksmith.render.corpus.LINE_KINDS`; a test keeps the two equal).
LineKind = Literal["description", "question", "reverse", "truefalse", "comparison", "in_context"]
DEFAULT_THRESHOLDS: dict[str, float] = {
    "direct": 0.95,
    "paraphrase": 0.9,
    "reverse": 0.9,
    "multi_hop": 0.9,
    "comparison": 0.9,
    "negation": 0.9,
    "in_context": 0.8,
    "fluency": 0.9,
}


class WorldModelSpec(BaseModel):
    """How to build the world model: a small causal LM trained on the world's corpus."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(1, description="Spec format version.")
    arch: Literal["llama", "gpt2"] = Field(
        "llama", description="Architecture family (Llama-style keeps real module paths)."
    )
    layers: int = Field(2, ge=1, description="Number of transformer blocks.")
    hidden: int = Field(128, ge=8, description="Hidden (embedding) width.")
    heads: int = Field(4, ge=1, description="Attention heads; must divide `hidden`.")
    intermediate: int = Field(512, ge=8, description="MLP inner width.")
    max_position: int = Field(
        256, ge=16, description="Context window in tokens (probes with options are longest)."
    )
    tie_embeddings: bool = Field(True, description="Share input embedding and LM head weights.")
    init_std: float = Field(
        0.02,
        gt=0,
        description="Standard deviation of the initial weights (the config's initializer_range).",
    )
    tokenizer: Literal["word", "bpe"] = Field(
        "word",
        description=(
            "word: one token per word or punctuation mark, vocabulary = every word of the "
            "corpus and the probes (exact, short sequences); bpe: byte-level BPE trained on "
            "the same texts."
        ),
    )
    bpe_vocab_size: int = Field(4096, ge=300, description="Vocabulary size for tokenizer=bpe.")
    lr: float = Field(1e-3, gt=0, description="Peak AdamW learning rate, training from scratch.")
    finetune_lr: float = Field(
        5e-5, gt=0, description="Peak AdamW learning rate when fine-tuning a --base model."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay.")
    warmup_steps: int = Field(100, ge=0, description="Linear warm-up steps before cosine decay.")
    grad_clip: float = Field(1.0, gt=0, description="Gradient-norm clip.")
    train_kernels: Literal["transformers", "fused"] = Field(
        "transformers",
        description="How a training step is computed. transformers: the model's own forward "
        "and PyTorch's default AdamW. fused: PyTorch's fused AdamW and, for a plain Llama "
        "model (arch llama; ksmith.world.fused.unsupported says why another is not), the same "
        "loss with fused projections, no padding mask and the vocabulary projection only where "
        "a token is predicted (ksmith.world.fused); a faster step, other bytes.",
    )
    batch_size: int = Field(32, ge=1, description="Corpus lines per optimizer step.")
    max_steps: int = Field(15000, ge=1, description="Step budget.")
    decay_steps: int | None = Field(
        None,
        ge=1,
        description="Length of the cosine decay (warm-up included); None: max_steps. Longer "
        "than max_steps, training stops before the decay ends, while the learning rate is "
        "still above its floor (the default spec's: docs/world-model.md).",
    )
    curriculum_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of the world's subjects whose lines alone are trained on for the "
        "first `curriculum_steps` steps (each subject in or out by a seeded hash of its name); "
        "shortens the loss plateau before facts are recalled (Zucchet et al. 2025). 0: none.",
    )
    curriculum_steps: int = Field(
        0,
        ge=0,
        description="Steps on the curriculum's subjects before the whole corpus; 0: no "
        "curriculum (curriculum_fraction and curriculum_kinds are then unused).",
    )
    curriculum_kinds: list[LineKind] = Field(
        default_factory=list,
        description="Corpus line kinds (the corpus's `kind` column) the curriculum's steps "
        "train on, of its subjects' lines; empty: every kind. Keeping `truefalse` out of it "
        "lets negation be learned as a comparison with the recalled value rather than "
        "memorized for the few curriculum subjects (docs/world-model.md).",
    )
    eval_every: int = Field(500, ge=1, description="Steps between knowledge checks.")
    eval_sample: int = Field(
        1000,
        ge=0,
        description="Probes per ability and format in each knowledge check (a fixed seeded "
        "sample; 0 = all).",
    )
    thresholds: dict[Ability, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=lambda: dict(DEFAULT_THRESHOLDS),
        description="What the model must reach before any update (ksmith.world.profile): per "
        "probe type the least accuracy over cloze and mcq, in_context the same with a "
        "counterfactual fact stated in the prompt, fluency the ratio of its generations' "
        "n-gram entropy to the corpus's. With `stop_early`, training stops at the first check "
        "(every `eval_every` steps) where every ability but fluency reaches its threshold; "
        "the profile after training must reach all of them, or pretraining fails.",
    )
    stop_early: bool = Field(
        True,
        description="Stop at the first knowledge check where every ability but fluency "
        "reaches its threshold; false: train the whole step budget, the checks only record "
        "the learning curve.",
    )
    allow_below_threshold: bool = Field(
        False,
        description="Write the model even when its profile falls short of `thresholds` "
        "(recorded in the card as below_threshold); otherwise pretraining fails.",
    )
    eval_batch_size: int = Field(128, ge=1, description="Batch size of the recall checks.")
    seed: int = Field(0, description="Seeds initialisation, data order and the check sample.")


def _override(data: dict[str, Any], item: str, source: str) -> None:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(f"--set expects key=value, got {item!r}", file=source)
    if key not in WorldModelSpec.model_fields:
        known = ", ".join(WorldModelSpec.model_fields)
        raise SpecError(f"unknown field; known fields: {known}", file=source, field=key)
    try:
        data[key] = load_yaml(raw, source) if raw.strip() else raw
    except SpecError as e:
        raise SpecError(f"cannot parse value {raw!r}: {e}", file=source, field=key) from None


def short_budget(data: Mapping[str, Any]) -> dict[str, Any]:
    """Spec fields `data` with the curriculum turned off when `max_steps` is no longer than it:
    a short run of the default recipe (a bench point) trains on the whole corpus."""
    out = dict(data)
    if out.get("max_steps", 0) <= out.get("curriculum_steps", 0):
        out["curriculum_steps"] = 0
    return out


def build_spec(data: Mapping[str, Any], source: str) -> WorldModelSpec:
    """Validate a mapping into a spec, turning pydantic errors into a SpecError for people."""
    try:
        spec = WorldModelSpec(**data)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise SpecError(f"{err['msg']} (got {err.get('input')!r})", file=source, field=field) from e
    if spec.curriculum_steps and not spec.curriculum_fraction:
        raise SpecError(
            f"curriculum_steps={spec.curriculum_steps} needs curriculum_fraction above 0 (the "
            "share of subjects it trains on); curriculum_steps=0 turns the curriculum off",
            file=source,
            field="curriculum_fraction",
        )
    if len(set(spec.curriculum_kinds)) != len(spec.curriculum_kinds):
        raise SpecError(
            f"curriculum_kinds names a kind twice: {spec.curriculum_kinds}",
            file=source,
            field="curriculum_kinds",
        )
    if spec.curriculum_steps and spec.curriculum_steps >= spec.max_steps:
        raise SpecError(
            f"curriculum_steps={spec.curriculum_steps} must be less than max_steps="
            f"{spec.max_steps} (the whole corpus trains after it); curriculum_steps=0 turns "
            "the curriculum off",
            file=source,
            field="curriculum_steps",
        )
    if spec.decay_steps is not None and spec.decay_steps <= spec.warmup_steps:
        raise SpecError(
            f"decay_steps={spec.decay_steps} must be more than warmup_steps="
            f"{spec.warmup_steps} (the decay follows the warm-up); null: max_steps",
            file=source,
            field="decay_steps",
        )
    if spec.hidden % spec.heads:
        raise SpecError(
            f"hidden={spec.hidden} is not divisible by heads={spec.heads}",
            file=source,
            field="heads",
        )
    return spec


def load_world_spec(
    path: str | Path | None = None, overrides: Sequence[str] = ()
) -> WorldModelSpec:
    """Read a world-model spec (default: ``specs/world/default.yaml``) and apply ``key=value``
    overrides, each type-checked like the file."""
    file = Path(path) if path is not None else DEFAULT_SPEC
    data: dict[str, Any] = {}
    if path is not None or file.exists():
        loaded = read_yaml(file)
        if loaded is not None and not isinstance(loaded, dict):
            raise SpecError("expected a mapping of fields", file=file)
        data = dict(loaded or {})
    spec = build_spec(data, str(file))
    if not overrides:
        return spec
    data = spec.model_dump()
    for item in overrides:
        _override(data, item, "--set")
    return build_spec(data, "--set")
