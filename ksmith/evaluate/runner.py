"""`ksmith evaluate`: score every probe before and after an update, write predictions and metrics.

The base model is loaded once. The before stage (its judgements, fluency texts and drift
measurements) is computed once per (model, dataset, config, backend) and cached (cache.py).
For the after stage each group's update is applied in place with
`ksmith.methods.artifacts.applied_update`, that group's probes are scored (with its in-context
prefixes, if any), and the base weights come back on exit. Without an update the after stage
IS the before stage (the no-update baseline), judged against the after answers, so every cell
of a sweep has the same shape. A sequential update with saved checkpoints is also scored at
each of them (`ksmith.evaluate.checkpoints`, written to checkpoints.json). Output
(docs/contracts.md section 6) is written atomically.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ksmith.errors import KsmithError
from ksmith.evaluate.backend import Backend
from ksmith.evaluate.cache import (
    StageMeasures,
    cache_key,
    default_cache_dir,
    load_before,
    save_before,
)
from ksmith.evaluate.knowledge import prior_knowledge
from ksmith.evaluate.measure import measure_after_group, measure_before, merge_measures
from ksmith.evaluate.outputs import model_metrics, write_outputs

log = logging.getLogger(__name__)


class EvalOptions(BaseModel):
    """How to evaluate: backend, batching, caching and the model-derived measurements."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: str = Field("hf", description="registered backend name (hf, vllm)")
    device: str = Field("auto", description="device for the model: auto, cpu, cuda, cuda:1 ...")
    batch_size: int = Field(32, ge=1, description="requests per forward pass")
    cache_dir: Path | None = Field(
        None, description="before-stage cache folder (default ~/.cache/ksmith/before)"
    )
    use_cache: bool = Field(True, description="read and write the before-stage cache")
    chunk_size: int = Field(256, ge=1, description="probes per scoring step (progress bar)")
    fluency_prompts: int = Field(
        8, ge=0, description="per group: direct-probe prompts continued for fluency"
    )
    fluency_tokens: int = Field(32, ge=1, description="new tokens generated per fluency prompt")
    drift_prompts: int = Field(32, ge=0, description="per group: Q- prompts for KL and CKA")
    hidden_layer: int = Field(-1, description="block whose hidden states CKA compares")
    lmeval_tasks: tuple[str, ...] = Field((), description="lm-eval tasks run on the model")
    lmeval_limit: int | None = Field(None, ge=1, description="examples per lm-eval task")
    lmeval_include_path: Path | None = Field(
        None, description="extra lm-eval task folder (e.g. from `ksmith export-lmeval`)"
    )
    unlearning: bool = Field(
        True,
        description="unlearn configs: per-item token scores (items.parquet), the relearning "
        "attack and, with the retain model's evaluation, the metrics against it",
    )
    seed: int = Field(0, description="bootstrap seed")
    n_boot: int = Field(1000, ge=10, description="bootstrap resamples per interval")


@dataclass
class Hooks:
    """The runner's contacts with the rest of ksmith; tests swap in fakes."""

    load_model: Callable[[str, str], tuple[Any, Any]]
    model_fingerprint: Callable[[str], str]
    make_backend: Callable[[Any, Any, EvalOptions], Backend]
    applied_update: Callable[..., Any]  # (model, update_dir, group, checkpoint=None)
    read_update: Callable[[Path], dict[str, Any]]
    load_probes: Callable[[Path, str], list[dict[str, Any]]]
    read_card: Callable[[Path], dict[str, Any]]
    run_lmeval: Callable[..., dict[str, Any]]
    load_requests: Callable[[Path, str], list[dict[str, Any]]] | None = None


def make_backend(model: Any, tokenizer: Any, options: EvalOptions) -> Backend:
    """Instantiate the registered backend `options.backend` on a loaded model.

    The device is chosen once, when the model is loaded; backends use the model where it is.
    """
    from ksmith.evaluate.backend import BACKENDS

    if options.backend == "hf" and "hf" not in BACKENDS:
        import ksmith.evaluate.hf  # noqa: F401  (registers "hf")
    cls = BACKENDS.get(options.backend)
    return cls(model, tokenizer, batch_size=options.batch_size)


def default_hooks() -> Hooks:
    from ksmith.data import load_probes, load_requests, read_card
    from ksmith.evaluate.lmeval import run_lmeval
    from ksmith.methods.artifacts import applied_update, read_update
    from ksmith.models import load_model, model_fingerprint

    return Hooks(
        load_model=lambda path, device: load_model(path, device=device),
        model_fingerprint=model_fingerprint,
        make_backend=make_backend,
        applied_update=applied_update,
        read_update=read_update,
        load_probes=load_probes,
        read_card=read_card,
        run_lmeval=run_lmeval,
        load_requests=load_requests,
    )


_CONFIG = re.compile(r"^(?P<domain>[^.]+)\.(?P<kind>edit|unlearn)\.(?P<level>[^.]+)\.k(?P<k>\d+)$")


def describe_config(config: str, probes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """kind, level and scale of a config, from its name (or its probes when it does not parse)."""
    m = _CONFIG.match(config)
    if m:
        return {"kind": m["kind"], "level": m["level"], "scale": int(m["k"])}
    per_group: dict[int, set[str]] = {}
    for p in probes:
        per_group.setdefault(int(p["group"]), set()).add(p["request_id"])
    return {
        "kind": probes[0]["kind"],
        "level": probes[0]["level"],
        "scale": max(len(r) for r in per_group.values()),
    }


def _check_update(
    update: Mapping[str, Any], path: Path, dataset_fp: str, config: str, model_fp: str | None
) -> None:
    where = path / "update.json"
    model = update.get("model")
    recorded = model.get("fingerprint") if isinstance(model, Mapping) else None
    for field, value in (
        ("dataset_fingerprint", update.get("dataset_fingerprint")),
        ("model.fingerprint", recorded),
    ):
        if not isinstance(value, str) or not value:
            raise KsmithError(
                f"{where}: field '{field}' is missing: an update that does not name the "
                "fingerprints of its model and dataset cannot be checked against them; refusing"
            )
    if update.get("dataset_fingerprint") not in (None, dataset_fp):
        raise KsmithError(
            f"{where}: field 'dataset_fingerprint' is {update['dataset_fingerprint']!r} but the "
            f"dataset's is {dataset_fp!r}: the update was made for another dataset"
        )
    if update.get("config") not in (None, config):
        raise KsmithError(f"{where}: field 'config' is {update['config']!r}, not {config!r}")
    if model_fp is not None and recorded not in (None, model_fp):
        raise KsmithError(
            f"{where}: field 'model.fingerprint' does not match the model being evaluated"
        )


class _LazyModel:
    """Loads the base model on first use: a cached before stage without an update needs none."""

    def __init__(self, hooks: Hooks, path: str, device: str):
        self._hooks, self._path, self._device = hooks, path, device
        self.pair: tuple[Any, Any] | None = None

    def get(self) -> tuple[Any, Any]:
        if self.pair is None:
            log.info("loading model %s", self._path)
            pair = self._hooks.load_model(self._path, self._device)
            check_finite_weights(pair[0], self._path)
            self.pair = pair
        return self.pair


def check_finite_weights(model: Any, where: str) -> None:
    """A model with a NaN or infinite weight cannot be evaluated: stop before writing."""
    import torch

    params = getattr(model, "named_parameters", None)
    if params is None:  # a stand-in model without torch parameters
        return
    for name, p in params():
        if p.is_floating_point() and not torch.isfinite(p.detach()).all():
            raise KsmithError(
                f"{where}: parameter '{name}' has non-finite weights (NaN or inf); refusing to "
                "evaluate this model"
            )


def evaluate(
    model: str,
    dataset: str | Path,
    config: str,
    *,
    out: str | Path,
    update: str | Path | None = None,
    options: EvalOptions | None = None,
    hooks: Hooks | None = None,
    retain: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate `model` (updated by `update`, if given) on `config` of `dataset`; write `out`.

    An unlearn config also gets items.parquet (`ksmith.evaluate.unlearn_items`), and with
    `retain` (the retain model's evaluation folder of the same config) the metrics against
    the retain model (`ksmith.evaluate.retain_metrics`). Returns the metrics.json content.
    Nothing is written to `out` unless everything succeeds.
    """
    options = options or EvalOptions()
    hooks = hooks or default_hooks()
    dataset = Path(dataset)
    card = hooks.read_card(dataset)
    dataset_fp = str(card["fingerprint"])
    probes = sorted(hooks.load_probes(dataset, config), key=lambda p: (int(p["group"]), p["id"]))
    if not probes:
        raise KsmithError(f"{dataset}: config '{config}' has no probes")
    described = describe_config(config, probes)
    model_fp = hooks.model_fingerprint(model)
    update_dir = Path(update) if update is not None else None
    update_info = hooks.read_update(update_dir) if update_dir is not None else None
    if update_info is not None:
        _check_update(update_info, update_dir, dataset_fp, config, model_fp)  # type: ignore[arg-type]

    from ksmith.io import atomic_output_dir

    lazy = _LazyModel(hooks, model, options.device)
    inputs = [dataset, update_dir, model if Path(model).exists() else None]
    if retain is not None:
        inputs.append(Path(retain))
    with atomic_output_dir(out, kind="evaluation", inputs=inputs) as tmp:
        before, cache_info = _before_stage(
            lazy, hooks, probes, options, model_fp, dataset_fp, config
        )
        knowledge = prior_knowledge(probes, before.judgements, config=config)  # warns if low
        after = _after_stage(lazy, hooks, probes, before, update_dir, options)
        metrics = model_metrics(before, after, options)
        if retain is not None and not (options.unlearning and described["kind"] == "unlearn"):
            raise KsmithError(
                f"{config}: a retain model's evaluation is compared with unlearn configs only, "
                "and only with the unlearning option on"
            )
        if described["kind"] == "unlearn" and options.unlearning:
            from ksmith.evaluate.retain_eval import unlearn_cell

            metrics.update(unlearn_cell(
                lazy, hooks, dataset, config, probes, before, after, update_dir, options, tmp,
                model=model, retain=None if retain is None else Path(retain), dataset_fp=dataset_fp,
                model_fp=model_fp,
            ))  # fmt: skip
        from ksmith.evaluate.cost import cost_metrics

        groups = sorted({int(p["group"]) for p in probes})
        metrics.update(
            cost_metrics(update_info, len(groups), seed=options.seed, n_boot=options.n_boot)
        )
        if options.lmeval_tasks:
            metrics.update(_capability(lazy, hooks, update_dir, groups[0], options))
        record = {
            "model": {"path": str(model), "fingerprint": model_fp},
            "update": None if update_dir is None else str(update_dir),
            "method": update_info.get("method", "none") if update_info else "none",
            "dataset": {"path": str(dataset), "fingerprint": dataset_fp},
            "config": config,
            "backend": options.backend,
            "options": options.model_dump(mode="json"),
            "before_cache": cache_info,
            "knowledge": knowledge,
            **described,
        }
        result = write_outputs(tmp, probes, before, after, metrics, record, options)
        if update_info is not None and update_dir is not None:
            _checkpoints(lazy, hooks, probes, before, update_dir, update_info, result, options, tmp)
    return result


def _checkpoints(
    lazy: _LazyModel,
    hooks: Hooks,
    probes: list[dict[str, Any]],
    before: StageMeasures,
    update_dir: Path,
    update_info: Mapping[str, Any],
    result: Mapping[str, Any],
    options: EvalOptions,
    out: Path,
) -> None:
    """checkpoints.json, when the update declared checkpoints along its stream of edits (a
    cell whose k is at or below every declared count holds its final point only)."""
    from ksmith.evaluate import checkpoints as cp
    from ksmith.evaluate.outputs import _finite
    from ksmith.io import write_json

    if not update_info.get("checkpoints"):
        return
    base, tokenizer = lazy.get()
    along = cp.evaluate_checkpoints(
        base, tokenizer, hooks, probes, before, update_dir, update_info, result, options
    )
    write_json(out / cp.CHECKPOINTS_FILE, _finite(along))


def _before_stage(
    lazy: _LazyModel,
    hooks: Hooks,
    probes: list[dict[str, Any]],
    options: EvalOptions,
    model_fp: str,
    dataset_fp: str,
    config: str,
) -> tuple[StageMeasures, dict[str, Any]]:
    key = cache_key(
        model=model_fp,
        dataset=dataset_fp,
        config=config,
        backend=options.backend,
        fluency_prompts=options.fluency_prompts,
        fluency_tokens=options.fluency_tokens,
        drift_prompts=options.drift_prompts,
        hidden_layer=options.hidden_layer,
    )
    cache_dir = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
    info = {"key": key, "dir": str(cache_dir), "hit": False}
    if options.use_cache:
        cached = load_before(cache_dir, key)
        if cached is not None:
            log.info("before stage: cache hit %s", key[:12])
            return cached, info | {"hit": True}
    base, tokenizer = lazy.get()
    measures = measure_before(hooks.make_backend(base, tokenizer, options), probes, options)
    if options.use_cache:
        try:
            save_before(cache_dir, key, measures)
        except OSError as e:  # e.g. a concurrent run wrote the same entry: not fatal
            log.warning("could not write the before cache %s: %s", cache_dir / key, e)
    return measures, info


def _after_stage(
    lazy: _LazyModel,
    hooks: Hooks,
    probes: list[dict[str, Any]],
    before: StageMeasures,
    update_dir: Path | None,
    options: EvalOptions,
) -> StageMeasures:
    if update_dir is None:
        return before
    base, tokenizer = lazy.get()
    by_group: dict[int, list[dict[str, Any]]] = {}
    for p in probes:
        by_group.setdefault(int(p["group"]), []).append(p)
    parts = []
    for g, group_probes in by_group.items():
        with hooks.applied_update(base, update_dir, g) as (updated, prefixes):
            backend = hooks.make_backend(updated, tokenizer, options)
            parts.append(measure_after_group(backend, group_probes, prefixes, g, options))
    return merge_measures(parts)


def _capability(
    lazy: _LazyModel, hooks: Hooks, update_dir: Path | None, group: int, options: EvalOptions
) -> dict[str, dict[str, Any]]:
    """lm-eval tasks on the updated model of the first group (or on the base model)."""
    from ksmith.evaluate.lmeval import capability_metrics

    base, tokenizer = lazy.get()
    kwargs = {"limit": options.lmeval_limit, "include_path": options.lmeval_include_path}
    if update_dir is None:
        results = hooks.run_lmeval(base, tokenizer, list(options.lmeval_tasks), **kwargs)
    else:
        with hooks.applied_update(base, update_dir, group) as (updated, _prefixes):
            results = hooks.run_lmeval(updated, tokenizer, list(options.lmeval_tasks), **kwargs)
    return capability_metrics(results)
