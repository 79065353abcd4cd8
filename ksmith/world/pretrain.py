"""`ksmith pretrain`: dataset folder -> world model folder (docs/contracts.md, section 4)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ksmith import __version__
from ksmith.errors import KsmithError
from ksmith.evaluate.hf import HFBackend
from ksmith.io import atomic_output_dir
from ksmith.world.card import render_card, tokenizer_kind
from ksmith.world.probes import KnowledgeProbes, collect_probes, probe_rows, vocabulary_texts
from ksmith.world.profile import (
    IN_CONTEXT_TYPES,
    capability_profile,
    in_context_prefixes,
    load_profile_set,
    shortfalls,
    summary,
)
from ksmith.world.spec import WorldModelSpec
from ksmith.world.tokenizer import train_tokenizer
from ksmith.world.training import TrainResult, abilities, build_model, train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorldData:
    """What training needs from a dataset folder."""

    lines: tuple[str, ...]
    vocabulary: tuple[str, ...]
    check: KnowledgeProbes  # the training check (before sampling)
    profile: tuple[list[dict], list[dict], list[str]]  # probes, requests, descriptions
    fingerprint: str | None
    subjects: tuple[str, ...] = ()  # each line's subject ("" for none): the curriculum's input
    kinds: tuple[str, ...] = ()  # each line's kind (the corpus's `kind` column)


def load_world_data(dataset_dir: str | Path) -> WorldData:
    """Corpus lines, tokenizer texts, the knowledge check and the profile set of a dataset
    folder (contracts §1, §3). The check asks the profile configs' probes (every type, cloze
    and mcq, before answers; in-context: direct and paraphrase after answers with the new fact
    in the prompt); a dataset without profile configs is checked on its direct probes."""
    from ksmith.data import read_card
    from ksmith.data.card import corpus_path
    from ksmith.data.parquet import read_rows

    if not Path(dataset_dir).is_dir():
        raise KsmithError(f"{dataset_dir}: dataset folder not found")
    fingerprint = read_card(dataset_dir).get("fingerprint")
    corpus = read_rows(Path(dataset_dir) / corpus_path())
    lines = [r["text"] for r in corpus]
    rows = probe_rows(dataset_dir)
    probes, requests, descriptions = load_profile_set(dataset_dir)
    if probes:
        check = collect_probes(probes, types=None) + collect_probes(
            [p for p in probes if p["type"] in IN_CONTEXT_TYPES and p["qset"] == "Q+"],
            types=None,
            answer="answer_after",
            prefixes=in_context_prefixes(requests),
            kind="in_context",
        )
    else:
        check = collect_probes(rows)
    return WorldData(
        lines=tuple(lines),
        vocabulary=tuple(vocabulary_texts(lines, [*rows, *probes])),
        check=check,
        profile=(probes, requests, descriptions),
        fingerprint=str(fingerprint) if fingerprint is not None else None,
        subjects=tuple(str(r.get("subject") or "") for r in corpus),
        kinds=tuple(str(r.get("kind") or "") for r in corpus),
    )


def library_versions() -> dict[str, str]:
    """What the weights' bytes depend on besides the spec and the data: the torch and
    transformers releases, the CPU kernels' instruction set and the CPU (`ksmith.runtime`)."""
    import torch
    import transformers

    from ksmith.runtime import cpu_model, float_kernels

    return {
        "torch": str(torch.__version__),
        "transformers": str(transformers.__version__),
        "float_kernels": float_kernels(),
        "cpu": cpu_model(),
    }


def pretrain(
    dataset_dir: str | Path,
    out: str | Path,
    spec: WorldModelSpec,
    *,
    base: str | None = None,
    device: str = "auto",
    progress: bool = True,
    world: WorldData | None = None,
    card_extra: dict[str, Any] | None = None,
    thresholds_fatal: bool = True,
    extra_files: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Train a world model on `dataset_dir` (or fine-tune `base` on it) and write it to `out`.

    Fails (KsmithError, nothing written) when the capability profile after training falls
    short of `spec.thresholds`, unless `spec.allow_below_threshold` (or not
    `thresholds_fatal`: the shortfall is then only recorded). Returns the ``ksmith:``
    block written to the model card, plus ``train_seconds`` and ``train_cpu_seconds`` (not
    written: the folder depends on the spec and the data only).

    `world` replaces the dataset's own training data (a retain model trains on the corpus of
    a changed world: `ksmith.world.retain`); `card_extra` is merged into the card's block and
    `extra_files` (name -> text) are written into the folder with the model.
    """
    from transformers import GenerationConfig

    from ksmith.models.loading import load_model, resolve_device

    if world is None:
        world = load_world_data(dataset_dir)
    if not world.check.cloze and not world.check.mcq:
        log.warning(
            "%s: no probes to check knowledge on; training runs its step budget", dataset_dir
        )
    dev = resolve_device(device)
    if base is None:
        tokenizer = train_tokenizer(world.vocabulary, spec.tokenizer, spec.bpe_vocab_size)
        model = build_model(spec, tokenizer).to(dev)
        lr = spec.lr
    else:
        model, tokenizer = load_model(base, device=dev)
        lr = spec.finetune_lr
    n_params = sum(p.numel() for p in model.parameters())
    check = world.check.sample(spec.eval_sample, spec.seed)
    log.info(
        "%s: %d corpus lines, knowledge check of %d cloze / %d mcq probes (%s); model %s, "
        "%d parameters, vocab %d",
        dataset_dir,
        len(world.lines),
        len(check.cloze),
        len(check.mcq),
        ", ".join(check.kinds()) or "none",
        model.config.model_type,
        n_params,
        len(tokenizer),
    )
    result: TrainResult = train(
        model, tokenizer, world.lines, check, spec, lr=lr, progress=progress,
        subjects=world.subjects,
        kinds=world.kinds,
    )  # fmt: skip
    probes, requests, descriptions = world.profile
    profile: dict[str, Any] = {}
    if probes:
        backend = HFBackend(model, tokenizer, batch_size=spec.eval_batch_size)
        profile = capability_profile(backend, probes, requests, descriptions, seed=spec.seed)
    final = summary(profile) if profile else abilities(result.check)
    short = shortfalls(final, spec.thresholds)
    if short:
        message = (
            f"{dataset_dir}: after {result.steps} steps ({result.stopped_by}) the world model "
            f"falls short of its thresholds: {'; '.join(short)}. Raise max_steps, change the "
            "recipe, or set allow_below_threshold: true to keep it anyway (recorded in its card)"
        )
        if thresholds_fatal and not spec.allow_below_threshold:
            raise KsmithError(message)
        log.warning("%s", message)
    direct = result.check.get("direct", {})
    if profile:
        direct = profile["accuracy"].get("direct", {})
    meta: dict[str, Any] = {
        "dataset_fingerprint": world.fingerprint,
        "recall": _round(direct.get("cloze")),
        "mcq_accuracy": _round(direct.get("mcq")),
        "abilities": {k: _round(v) for k, v in final.items()},
        "thresholds": dict(spec.thresholds),
        "below_threshold": short,
        "profile": profile,
        "tokenizer": tokenizer_kind(tokenizer),
        "seed": spec.seed,
        "arch": model.config.model_type,
        "base": base,
        "layers": int(model.config.num_hidden_layers),
        "hidden": int(model.config.hidden_size),
        "parameters": n_params,
        "vocab_size": len(tokenizer),
        "steps": result.steps,
        "stopped_by": result.stopped_by,
        "corpus_lines": len(world.lines),
        "check_probes": len(check.cloze) + len(check.mcq),
        "ksmith_version": __version__,
        # Same spec and data give the same weights with these versions (float kernels change
        # between releases); the leaderboard's regeneration check names them.
        "versions": library_versions(),
        **(card_extra or {}),
    }
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=32,
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    try:
        with atomic_output_dir(out, kind="world-model") as tmp:
            model.to("cpu").save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "README.md").write_text(render_card(meta))
            (tmp / "world_spec.yaml").write_text(yaml.safe_dump(spec.model_dump(), sort_keys=True))
            (tmp / "train_log.json").write_text(json.dumps(result.history, indent=2) + "\n")
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text)
    except OSError as e:
        raise KsmithError(f"{out}: cannot write the model folder: {e}") from e
    return meta | {
        "train_seconds": round(result.train_seconds, 2),
        "train_cpu_seconds": round(result.cpu_seconds, 2),
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
