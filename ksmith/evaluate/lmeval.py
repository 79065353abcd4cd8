"""The lm-eval bridge, both ways.

`export_lmeval` writes lm-eval task YAMLs over a local ksmith dataset, so
``lm_eval --include_path TASKS_DIR --tasks ksmith_<config>_<format>`` scores ANY lm-eval model on
ksmith probes with ksmith's conventions: ``mcq`` -> ``multiple_choice`` over the options (each
scored as " " + option), ``cloze`` -> ``loglikelihood`` of " " + answer (``acc`` = every answer
token greedy, the cloze rule), ``qa`` -> ``generate_until`` "\\n" with normalized exact match;
reasoned probes (negation and comparison, a ``cue``) -> one ``..._reasoned`` task per config
(`REASONED`).
The YAMLs read the dataset's own parquet files and select rows with pyarrow ``filters``
(datasets >= 3). ``data_files`` are written relative to the task folder, never absolute, so the
folder can be shared (or committed) next to the dataset: each task includes
``_ksmith_template_yaml``, whose ``custom_dataset: !function ksmith_data.load_probes`` (a small
module written beside it) resolves them against its own location, whatever the working
directory. Targets are the after
answers (probes an unlearned model must *avoid* are left out: their accuracy would mean the
opposite) or, with ``target="before"``, the before answers (tasks suffixed ``_before``).

`run_lmeval` runs lm-eval tasks on an in-memory (updated) model through ``HFLM``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ksmith.errors import KsmithError
from ksmith.evaluate.scoring import REASON_TOKENS
from ksmith.render.text import CUES

log = logging.getLogger(__name__)

GROUP = "ksmith"
TARGETS = ("after", "before")


def task_name(config: str, fmt: str, target: str = "after") -> str:
    """``ksmith_<config with dots as underscores>_<format>`` (``_before`` for before targets)."""
    suffix = "" if target == "after" else f"_{target}"
    return f"ksmith_{config.replace('.', '_')}_{fmt}{suffix}"


# Reasoned probes (a `cue`: negation, comparison; ksmith.evaluate.scoring.reasoned_prompts) get
# a task of their own: the model generates its recall, the cue and the answer in one greedy
# continuation, and a regex takes the word after the last cue. ksmith's own scoring writes the
# cue when the model does not; here a continuation without it scores as "[invalid]".
REASONED = "reasoned"
ANSWER_AFTER_CUE = "(?:" + "|".join(re.escape(c) for c in sorted(set(CUES.values()))) + r")\s*(\w+)"
TEMPLATE = "_ksmith_template_yaml"  # no .yaml suffix: lm-eval does not index it as a task
LOADER = "ksmith_data.py"
LOADER_SOURCE = '''"""Loads a ksmith task's probes; written by `ksmith export-lmeval`.

`data_files` in the task YAMLs are relative to this folder, so the folder works wherever it
and the dataset are copied together, whatever the working directory.
"""

from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent


def load_probes(data_files, filters=None, **_metadata):
    files = {split: str(HERE / path) for split, path in data_files.items()}
    return datasets.load_dataset("parquet", data_files=files, filters=filters)
'''


def task_config(
    data_file: str | Path, config: str, fmt: str, *, target: str, fingerprint: str
) -> dict[str, Any]:
    """One lm-eval task definition (a YAML mapping) for the probes of `config` in `fmt`;
    `data_file` is the probes' parquet, relative to the task folder."""
    answer = f"answer_{target}"
    if fmt == REASONED:  # the qa rows of reasoned probes (mcq rows share their prompts)
        filters: list[list[str]] = [["format", "==", "qa"], ["cue", "!=", ""]]
    else:
        filters = [["format", "==", fmt], ["cue", "==", ""]]
    if target == "after":
        filters.append(["expect_after", "==", "match"])
    task: dict[str, Any] = {
        "include": TEMPLATE,
        "task": task_name(config, fmt, target),
        "dataset_path": "parquet",
        "dataset_kwargs": {"data_files": {"test": Path(data_file).as_posix()}, "filters": filters},
        "test_split": "test",
        "doc_to_text": "{{prompt}}",
        "target_delimiter": " ",
        "metadata": {"version": 1.0, "ksmith_config": config, "dataset_fingerprint": fingerprint},
    }
    if fmt == "mcq":
        task |= {
            "output_type": "multiple_choice",
            "doc_to_choice": "options",
            "doc_to_target": f"{{{{options.index({answer})}}}}",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        }
    elif fmt == "cloze":
        # lm-eval joins a loglikelihood target to its context as is (no target_delimiter, as
        # in its lambada task): the target carries its own leading space.
        task |= {
            "output_type": "loglikelihood",
            "doc_to_target": f"{{{{' ' + {answer}}}}}",
            "target_delimiter": "",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        }
    elif fmt == "qa":
        # the normalization of scoring.normalize_answer: no articles, no spaces
        ignore = ["(?i)\\b(?:a|an|the)\\b", "\\s+"]
        strip = [{"function": "remove_whitespace"}, {"function": "take_first"}]
        task |= _generate_until(answer, 32, "strip", strip, ignore)
    elif fmt == REASONED:
        after_cue = [
            {
                "function": "regex",
                "regex_pattern": ANSWER_AFTER_CUE,
                "group_select": -1,  # the last cue's answer
                "fallback": "[invalid]",
            },
            {"function": "take_first"},
        ]
        task |= _generate_until(answer, REASON_TOKENS + 32, "after_cue", after_cue)
    else:
        raise KsmithError(f"no lm-eval task type for probe format {fmt!r}")
    return task


def _generate_until(
    answer: str,
    max_gen_toks: int,
    filter_name: str,
    filters: list[dict[str, Any]],
    ignore: Sequence[str] = (),
) -> dict[str, Any]:
    """The fields of a greedy generation task stopped at a newline, its output passed through
    `filters` and compared with `answer` by case- and punctuation-blind exact match."""
    metric: dict[str, Any] = {
        "metric": "exact_match",
        "aggregation": "mean",
        "higher_is_better": True,
        "ignore_case": True,
        "ignore_punctuation": True,
    }
    if ignore:
        metric["regexes_to_ignore"] = list(ignore)
    return {
        "output_type": "generate_until",
        "doc_to_target": f"{{{{{answer}}}}}",
        "generation_kwargs": {"until": ["\n"], "do_sample": False, "max_gen_toks": max_gen_toks},
        "filter_list": [{"name": filter_name, "filter": filters}],
        "metric_list": [metric],
    }


def export_lmeval(
    dataset: str | Path,
    out: str | Path,
    *,
    configs: Sequence[str] | None = None,
    target: str = "after",
) -> list[str]:
    """Write one task YAML per (config, format) and groups ``ksmith_<config>`` and ``ksmith``
    into `out` (atomically). Returns the task names."""
    from ksmith.data import list_configs, load_probes, read_card
    from ksmith.data.card import probes_path
    from ksmith.io import atomic_output_dir

    if target not in TARGETS:
        raise KsmithError(f"target is {target!r}; expected one of {', '.join(TARGETS)}")
    import os

    dataset = Path(dataset).resolve()
    where = Path(out).resolve()
    fingerprint = str(read_card(dataset)["fingerprint"])
    known = list_configs(dataset)
    chosen = list(configs) if configs else known
    for c in chosen:
        if c not in known:
            raise KsmithError(f"{dataset}: no config '{c}'; known: {', '.join(known)}")
    names: list[str] = []
    group_suffix = "" if target == "after" else f"_{target}"
    with atomic_output_dir(out, kind="lmeval-tasks") as tmp:
        for config in chosen:
            probes = load_probes(dataset, config)
            keep = [p for p in probes if target == "before" or p["expect_after"] == "match"]
            plain = [p for p in keep if not p.get("cue")]
            formats = [f for f in ("mcq", "cloze", "qa") if any(p["format"] == f for p in plain)]
            if any(p.get("cue") and p["format"] == "qa" for p in keep):
                formats.append(REASONED)
            tasks = []
            for fmt in formats:
                task = task_config(
                    os.path.relpath(dataset / probes_path(config), where),
                    config,
                    fmt,
                    target=target,
                    fingerprint=fingerprint,
                )
                _dump(tmp / f"{task['task']}.yaml", task)
                tasks.append(task["task"])
            if tasks:
                group = f"ksmith_{config.replace('.', '_')}{group_suffix}"
                _dump(
                    tmp / f"{group}.yaml",
                    {"group": group, "task": tasks, "metadata": {"version": 1.0}},
                )
                names.extend(tasks)
        if not names:
            raise KsmithError(f"{dataset}: no probes to export for {', '.join(chosen)}")
        (tmp / TEMPLATE).write_text("custom_dataset: !function ksmith_data.load_probes\n")
        (tmp / LOADER).write_text(LOADER_SOURCE)
        _dump(
            tmp / f"{GROUP}{group_suffix}.yaml",
            {"group": GROUP + group_suffix, "task": names, "metadata": {"version": 1.0}},
        )
    return names


def _dump(path: Path, obj: Mapping[str, Any]) -> None:
    path.write_text(yaml.safe_dump(dict(obj), sort_keys=False, allow_unicode=True, width=100))


def run_lmeval(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str],
    *,
    limit: int | None = None,
    include_path: str | Path | None = None,
    batch_size: int = 8,
    device: str | None = None,
    include_defaults: bool = True,
) -> dict[str, Any]:
    """Run lm-eval `tasks` on an in-memory model via ``HFLM(pretrained=model, ...)``.

    The model stays where it is: `device` (default: the model's device) is handed to HFLM
    only, and must match the model's. ``include_defaults=False`` skips indexing lm-eval's
    built-in tasks (seconds instead of half a minute) when all tasks come from
    `include_path`. Returns ``{"results", "higher_is_better", "n-samples",
    "versions"}`` from ``lm_eval.simple_evaluate``.
    """
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    here = str(next(model.parameters()).device)
    if device is not None and device != here:
        raise KsmithError(f"run_lmeval: the model is on {here}, not on {device}; move it first")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=here)
    manager = TaskManager(
        include_path=str(include_path) if include_path else None,
        include_defaults=include_defaults,
    )
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise KsmithError(f"unknown lm-eval task(s): {', '.join(unknown)}")
    results = simple_evaluate(
        model=lm,
        tasks=list(tasks),
        limit=limit,
        task_manager=manager,
        log_samples=False,
        bootstrap_iters=1000,
        random_seed=0,
        numpy_random_seed=0,
        torch_random_seed=0,
        fewshot_random_seed=0,
    )
    if results is None:  # non-zero ranks in distributed runs
        return {}
    return {k: results.get(k, {}) for k in ("results", "higher_is_better", "n-samples", "versions")}


def capability_metrics(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``capability.<task>.<metric>[.<filter>]@lmeval`` for lm-eval's higher-is-better metrics;
    the interval is value +- 1.96 standard errors when lm-eval reports one."""
    out: dict[str, dict[str, Any]] = {}
    better = results.get("higher_is_better", {})
    for task, values in sorted(results.get("results", {}).items()):
        n = results.get("n-samples", {}).get(task, {}).get("effective", 0)
        for key, value in values.items():
            metric, _, filt = key.partition(",")
            if metric == "alias" or metric.endswith("_stderr") or not _is_number(value):
                continue
            if not better.get(task, {}).get(metric, True):
                log.info("lm-eval %s %s is lower-is-better; not a capability metric", task, key)
                continue
            se = values.get(f"{metric}_stderr,{filt}")
            ci = [value - 1.96 * se, value + 1.96 * se] if _is_number(se) else [None, None]
            name = f"capability.{task}.{metric}" + (f".{filt}" if filt not in ("", "none") else "")
            out[f"{name}@lmeval"] = {"value": float(value), "ci": ci, "n": int(n), "mode": "lmeval"}
    return out


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def parse_tasks(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]
