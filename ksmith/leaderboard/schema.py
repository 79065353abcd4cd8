"""The submission format: `leaderboard/submissions/<id>/submission.yaml` + `predictions.parquet`.

`submission.yaml` is a versioned, frozen pydantic model (`Submission`); its JSON schema is
exported to `leaderboard/submission.schema.json` for editors. `predictions.parquet` holds the
per-probe predictions of every cell: the columns of docs/contracts.md section 6 plus `config`.
Every prediction-derived number (registry `source="predictions"`) is recomputed from those
predictions by `ksmith leaderboard verify`; model-derived metrics (fluency, drift), cost and
lm-eval capability cannot be recomputed without the model and are shown as self-reported.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ksmith.errors import SpecError

# libyaml when present (submissions are large; the pure-Python parser is slow), same semantics.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

SCHEMA_VERSION = 1
SUBMISSION_FILE = "submission.yaml"
PREDICTIONS_FILE = "predictions.parquet"

ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,79}$"
CONFIG_PATTERN = r"^(?P<domain>[A-Za-z0-9_-]+)\.(?P<kind>edit|unlearn)\.(?P<level>[A-Za-z0-9_-]+)\.k(?P<scale>[0-9]+)$"
FINGERPRINT_PATTERN = r"^[0-9a-f]{64}$"

# predictions.parquet: contract section 6 columns, the evaluator's two world-membership flags
# (ksmith.evaluate.scoring.PREDICTION_COLUMNS), plus the cell they belong to.
PREDICTION_COLUMNS: dict[str, str] = {
    "config": "string",
    "probe_id": "string",
    "group": "int",
    "stage": "string",
    "mode": "string",
    "prediction": "string",
    "score": "float",
    "correct": "bool",
    "changed": "bool",
    "match_before": "bool",
    "match_after": "bool",
}
STAGES = ("before", "after")
MODES = ("mcq", "cloze", "gen_exact", "gen_contains")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EditorInfo(_Model):
    fingerprint: str = Field(
        pattern=FINGERPRINT_PATTERN,
        description="SHA-256 of the trained editor's weights file (editor.safetensors).",
    )
    training: dict[str, Any] = Field(
        default_factory=dict,
        description="The editor's training settings, as its card records them "
        "(`ksmith train-editor --set KEY=VALUE`); the audit trains it again from them.",
    )


class MethodInfo(_Model):
    name: str = Field(min_length=1, description="Registered update method name, e.g. `rome`.")
    version: str = Field("", description="Version of the method spec or implementation.")
    url: str | None = Field(
        None, description="Paper or code URL (http or https); null for ksmith's own methods."
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Resolved hyper-parameters shared by every cell's update (per-cell "
        "differences are in `cells[].params`).",
    )
    mode: Literal["batch", "sequential"] = Field(
        "batch",
        description="How each group's requests were applied: together (batch) or one after "
        "another (sequential, lifelong editing); the re-execution audit runs it the same way.",
    )
    editor: EditorInfo | None = Field(
        None,
        description="For a method with a trained editor (SERAC, MEND): the editor the update "
        "ran, by content (`params.editor_path` is only where it was on the submitter's "
        "machine); the re-execution audit finds or retrains it by this.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://\S+$", v):
            raise ValueError("expected an http:// or https:// URL")
        return v


class ModelInfo(_Model):
    id: str = Field(min_length=1, description="Hugging Face id or local path of the base model.")
    revision: str | None = Field(None, description="Hub revision (commit) of the base model.")
    fingerprint: str | None = Field(
        None, description="Content fingerprint of a local model (when there is no revision)."
    )
    dtype: str = Field("float32", description="Weights dtype the update and evaluation used.")
    abilities: dict[str, float | None] | None = Field(
        None,
        description="The model's capability profile before any update, as its card records it "
        "(ksmith.world.profile.summary: accuracy per probe type, in_context, fluency ratio); "
        "what the instrument could measure. Self-reported.",
    )
    below_threshold: list[str] = Field(
        default_factory=list,
        description="Abilities the card says fell short of the world model's thresholds.",
    )

    @field_validator("abilities")
    @classmethod
    def _abilities(cls, v: dict[str, float | None] | None) -> dict[str, float | None] | None:
        for name, x in (v or {}).items():
            if x is not None and not (math.isfinite(x) and 0 <= x <= 2):
                raise ValueError(f"ability {name!r} is {x}; expected a finite number in [0, 2]")
        return v


class DatasetInfo(_Model):
    suite: str = Field(min_length=1, description="Suite name from the dataset card.")
    fingerprint: str = Field(
        pattern=FINGERPRINT_PATTERN, description="The dataset card's `ksmith.fingerprint`."
    )


class Hardware(_Model):
    device: str = Field("cpu", description="torch device type the update ran on (cpu, cuda...).")
    name: str = Field("", description="Accelerator or CPU model name.")
    count: int = Field(1, ge=1, description="Number of devices used.")


class Bootstrap(_Model):
    """Interval settings; fixed by the board (`ksmith.leaderboard.checks.BoardPolicy`), so a
    submission must declare the board's values (seed 0, 1000 resamples)."""

    seed: int = Field(0, description="Seed of the bootstrap that gave the confidence intervals.")
    n_boot: int = Field(1000, ge=0, description="Bootstrap resamples per interval.")


class MetricValue(_Model):
    value: float | None = Field(description="The aggregate (null when no probe applies).")
    ci: tuple[float | None, float | None] = Field(description="Bootstrap interval [lo, hi].")
    n: int = Field(ge=0, description="Number of items the aggregate is over.")
    mode: str = Field(description="Scoring mode the metric used (mcq, cloze, gen_exact...).")


class Cell(_Model):
    config: str = Field(
        pattern=CONFIG_PATTERN, description="Dataset config, e.g. `biology.edit.leaf.k10`."
    )
    method: str = Field(min_length=1, description="Method name (same as `method.name`).")
    kind: Literal["edit", "unlearn"] = Field(description="Intervention kind of the config.")
    level: str = Field(min_length=1, description="Targeted level of the config.")
    scale: int = Field(ge=1, description="Scale k: requests applied together.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Hyper-parameters of this cell's update that differ from `method.params`.",
    )
    metrics: dict[str, MetricValue] = Field(
        min_length=1,
        description="Full metric name `<metric>[.<slice>]@<mode>` (base names in "
        "ksmith.evaluate.metrics.METRICS) -> aggregate, as in the cell's metrics.json.",
    )

    @property
    def domain(self) -> str:
        return parse_config(self.config)["domain"]

    @model_validator(mode="after")
    def _matches_config(self) -> Cell:
        parts = parse_config(self.config)
        for key in ("kind", "level", "scale"):
            if str(getattr(self, key)) != parts[key]:
                raise ValueError(
                    f"{key} {getattr(self, key)!r} does not match config {self.config!r}"
                )
        return self


class Submission(_Model):
    """One method on one model on one released dataset: metadata plus per-cell results."""

    schema_version: Literal[1] = Field(description="Version of this format.")
    id: str = Field(pattern=ID_PATTERN, description="Submission id; equals its folder name.")
    method: MethodInfo = Field(description="The update method.")
    model: ModelInfo = Field(description="The base model that was updated.")
    dataset: DatasetInfo = Field(description="The released dataset the results are on.")
    ksmith_version: str = Field(min_length=1, description="ksmith version that evaluated.")
    hardware: Hardware = Field(default_factory=Hardware, description="Where the update ran.")
    seeds: list[int] = Field(default_factory=list, description="Seeds of the update runs.")
    bootstrap: Bootstrap = Field(default_factory=Bootstrap, description="Interval settings.")
    cells: list[Cell] = Field(min_length=1, description="Per-config results.")

    @model_validator(mode="after")
    def _cells_consistent(self) -> Submission:
        seen: set[str] = set()
        for i, cell in enumerate(self.cells):
            if cell.config in seen:
                raise ValueError(f"cells[{i}]: config {cell.config!r} appears twice")
            seen.add(cell.config)
            if cell.method != self.method.name:
                raise ValueError(
                    f"cells[{i}].method {cell.method!r} differs from method.name "
                    f"{self.method.name!r}"
                )
        return self


def parse_config(config: str) -> dict[str, str]:
    """`biology.edit.leaf.k10` -> {domain, kind, level, scale} (all strings)."""
    m = re.match(CONFIG_PATTERN, config)
    if not m:
        raise ValueError(f"config {config!r} is not <domain>.<kind>.<level>.k<scale>")
    return m.groupdict()


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_error(err: ValidationError, file: str | Path) -> SpecError:
    """The first pydantic error as a SpecError naming the file and the dotted field."""
    first = err.errors()[0]
    field = _loc(first["loc"]) or None
    msg = first["msg"]
    if len(err.errors()) > 1:
        msg += f" (and {len(err.errors()) - 1} more problems)"
    return SpecError(msg, file=file, field=field)


def load_submission(path: str | Path) -> Submission:
    """Read and validate `submission.yaml` (a file, or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / SUBMISSION_FILE
    if not path.is_file():
        raise SpecError("missing file", file=path)
    text = path.read_text(encoding="utf-8")
    try:
        # No aliases: a few bytes of nested aliases expand into billions of values downstream.
        if any(isinstance(t, yaml.AliasToken) for t in yaml.scan(text, Loader=_LOADER)):
            raise SpecError("YAML aliases (*name) are not allowed in a submission", file=path)
        raw = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as e:
        raise SpecError(f"not valid YAML: {e}", file=path) from e
    if not isinstance(raw, dict):
        raise SpecError("expected a mapping at the top level", file=path)
    try:
        return Submission.model_validate(raw)
    except ValidationError as e:
        raise validation_error(e, path) from e


def dump_submission(sub: Submission) -> str:
    """Canonical YAML text (key order as declared, no aliases), stable across runs."""
    data = sub.model_dump(mode="json")
    if data["method"].get("editor") is None:
        del data["method"]["editor"]  # only methods with a trained editor record one
    return yaml.dump(
        data, Dumper=_DUMPER, sort_keys=False, allow_unicode=True, default_flow_style=None
    )


def json_schema_text() -> str:
    """The JSON schema of `submission.yaml`, as written to leaderboard/submission.schema.json."""
    schema = Submission.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
