"""`params.yaml`: every knob of the DVC pipeline, validated like any other spec."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from ksmith.errors import SpecError
from ksmith.spec.yamlio import read_yaml

Level = Literal["root", "intermediate", "leaf"]
Kind = Literal["edit", "unlearn"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelParams(_Frozen):
    base: str | None = Field(
        None,
        description="A real causal LM (local path or Hub id) to use instead of training the "
        "world model; null trains the world model from scratch on CPU.",
    )
    finetune: bool = Field(
        True,
        description="With `base` set: fine-tune it on the world's corpus first (TOFU-style), so "
        "that updates start from known knowledge. Ignored when `base` is null.",
    )
    world_spec: str = Field(
        "specs/world/default.yaml", description="World-model spec (architecture, training)."
    )
    world_overrides: dict[str, Any] = Field(
        default_factory=dict, description="key -> value overrides of the world-model spec."
    )


class LmEvalParams(_Frozen):
    tasks: list[str] = Field(
        default_factory=list,
        description="lm-eval tasks run on every updated model for general capability "
        "(e.g. [mmlu, hellaswag] on a machine that has their data). Empty: skipped.",
    )
    limit: int | None = Field(None, description="Examples per lm-eval task (null: all).")


class CellResources(_Frozen):
    """What one update or evaluate cell asks of a Ray cluster (`executor: ray`)."""

    cpus: float | None = Field(
        None,
        gt=0,
        description="CPUs reserved per cell; null: `threads`. Fractions are allowed.",
    )
    gpus: float = Field(
        0.0,
        ge=0,
        description="GPUs reserved per cell. A fraction (e.g. 0.25) lets that many small "
        "world-model cells share one GPU; Ray sets CUDA_VISIBLE_DEVICES for each cell.",
    )
    retries: int = Field(
        3,
        ge=0,
        description="Times a cell is run again after its worker process or node died (killed, "
        "out of memory, preempted). A cell that raises an error of its own is never retried.",
    )


class PipelineParams(_Frozen):
    """The whole benchmark run: what to generate, which model, which update matrix."""

    suite: str = Field(description="Suite spec to generate (specs/suites/*.yaml).")
    size: str = Field("small", description="World size preset declared by the graph specs.")
    model: ModelParams = Field(default_factory=ModelParams, description="The model to update.")
    backend: Literal["hf", "vllm"] = Field("hf", description="Evaluation backend.")
    device: str = Field("auto", description="torch device: auto, cpu, cuda, cuda:1 ...")
    batch_size: int = Field(64, gt=0, description="Evaluation batch size.")
    threads: int = Field(
        1,
        ge=1,
        description="torch CPU threads per process. 1 suits the small world model: on "
        "a 2-core machine a second thread mostly waits; raise it for real models on many cores.",
    )
    workers: int = Field(
        1,
        ge=1,
        description="Processes that run a stage's update or evaluation cells side by "
        "side (each with `threads` threads). Results do not depend on it. On a GPU keep 1.",
    )
    executor: Literal["local", "ray"] = Field(
        "local",
        description="Where a stage's cells run: `local` processes (see `workers`), or tasks on "
        "a Ray cluster (`pip install 'ksmith[ray]'`; see docs/scaling.md), as many at once as "
        "`resources` allow (`workers` is then unused). Results do not depend on it.",
    )
    ray_address: str | None = Field(
        None,
        description="With `executor: ray`: the cluster to attach to (`auto`, "
        "`ray://head:10001`, ...); null starts a local Ray instance with this machine's cores.",
    )
    resources: CellResources = Field(
        default_factory=CellResources,
        description="With `executor: ray`: CPUs, GPUs and retries per cell.",
    )
    methods: list[str] = Field(description="Update methods (names in `ksmith methods`).")
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-method hyper-parameter overrides: method -> {key: value}. Every "
        "method in `methods` has an entry (may be empty) so DVC tracks it per method.",
    )
    kinds: list[Kind] = Field(description="Intervention kinds to run.")
    levels: list[Level] = Field(description="Hierarchy levels to run.")
    scales: list[int] = Field(description="Scales k (requests applied together).")
    seeds: list[int] = Field(description="Seeds of the update methods (one cell per seed).")
    mode: Literal["batch", "sequential"] = Field("batch", description="How requests are applied.")
    checkpoints: list[int] = Field(
        default_factory=list,
        description="Lifelong editing (mode: sequential): counts of edits made so far at which "
        "each group is also evaluated along the stream, e.g. [1, 10, 100, 1000]; counts at or "
        "above a cell's k are skipped (its final state is the ordinary result). Empty: only "
        "the final state (docs/lifelong.md).",
    )
    lmeval: LmEvalParams = Field(default_factory=LmEvalParams, description="General capability.")

    @field_validator("scales")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(k <= 0 for k in v):
            raise ValueError("scales must be a non-empty list of positive integers")
        return v

    @field_validator("checkpoints")
    @classmethod
    def _increasing(cls, v: list[int], info: ValidationInfo) -> list[int]:
        if any(n <= 0 for n in v) or any(a >= b for a, b in zip(v, v[1:], strict=False)):
            raise ValueError("checkpoints must be positive, strictly increasing counts of edits")
        if v and info.data.get("mode") != "sequential":
            raise ValueError(
                "checkpoints are states along a sequential stream of edits: set mode: "
                "sequential, or checkpoints: []"
            )
        return v


def load_params(path: str | Path = "params.yaml") -> PipelineParams:
    """Read and validate params.yaml; errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise SpecError("file not found", file=path)
    raw = read_yaml(path)
    try:
        return PipelineParams.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise SpecError(
            f"{err['msg']} (got {err.get('input')!r})", file=path, field=field
        ) from None


def as_overrides(values: Mapping[str, Any]) -> tuple[str, ...]:
    """``key=value`` items for `--set` (sorted by key; each value as JSON, which the readers of
    `--set`, `ksmith.methods.params.parse_override` and the world spec's, parse as YAML)."""
    return tuple(f"{k}={json.dumps(v)}" for k, v in sorted(values.items()))
