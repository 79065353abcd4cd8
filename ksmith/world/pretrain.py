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
from ksmith.io import atomic_output_dir
from ksmith.world.card import render_card, tokenizer_kind
from ksmith.world.probes import KnowledgeProbes, collect_probes, probe_rows, vocabulary_texts
from ksmith.world.spec import WorldModelSpec
from ksmith.world.tokenizer import train_tokenizer
from ksmith.world.training import TrainResult, build_model, train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorldData:
    """What training needs from a dataset folder."""

    lines: tuple[str, ...]
    vocabulary: tuple[str, ...]
    probes: KnowledgeProbes
    fingerprint: str | None


def load_world_data(dataset_dir: str | Path) -> WorldData:
    """Corpus lines, tokenizer texts and direct probes of a dataset folder (contracts §1, §3)."""
    from ksmith.data import load_corpus, read_card

    if not Path(dataset_dir).is_dir():
        raise KsmithError(f"{dataset_dir}: dataset folder not found")
    fingerprint = read_card(dataset_dir).get("fingerprint")
    lines = load_corpus(dataset_dir)
    rows = probe_rows(dataset_dir)
    return WorldData(
        lines=tuple(lines),
        vocabulary=tuple(vocabulary_texts(lines, rows)),
        probes=collect_probes(rows),
        fingerprint=str(fingerprint) if fingerprint is not None else None,
    )


def pretrain(
    dataset_dir: str | Path,
    out: str | Path,
    spec: WorldModelSpec,
    *,
    base: str | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Train a world model on `dataset_dir` (or fine-tune `base` on it) and write it to `out`.

    Returns the ``ksmith:`` block written to the model card.
    """
    from transformers import GenerationConfig

    from ksmith.models.loading import load_model, resolve_device

    world = load_world_data(dataset_dir)
    if not world.probes.cloze:
        log.warning("%s: no direct cloze probes; recall cannot be measured", dataset_dir)
    dev = resolve_device(device)
    if base is None:
        tokenizer = train_tokenizer(world.vocabulary, spec.tokenizer, spec.bpe_vocab_size)
        model = build_model(spec, tokenizer).to(dev)
        lr = spec.lr
    else:
        model, tokenizer = load_model(base, device=dev)
        lr = spec.finetune_lr
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "%s: %d corpus lines, %d direct cloze / %d mcq probes; model %s, %d parameters, vocab %d",
        dataset_dir,
        len(world.lines),
        len(world.probes.cloze),
        len(world.probes.mcq),
        model.config.model_type,
        n_params,
        len(tokenizer),
    )
    result: TrainResult = train(
        model, tokenizer, world.lines, world.probes, spec, lr=lr, progress=progress
    )
    if world.probes.cloze and result.recall is not None and result.recall < spec.recall_threshold:
        log.warning(
            "recall %.3f is below recall_threshold %.3f after %d steps (%s)",
            result.recall,
            spec.recall_threshold,
            result.steps,
            result.stopped_by,
        )
    meta: dict[str, Any] = {
        "dataset_fingerprint": world.fingerprint,
        "recall": _round(result.recall),
        "mcq_accuracy": _round(result.mcq_accuracy),
        "train_seconds": round(result.train_seconds, 2),
        "train_cpu_seconds": round(result.cpu_seconds, 2),
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
        "recall_probes": len(world.probes.cloze),
        "mcq_probes": len(world.probes.mcq),
        "ksmith_version": __version__,
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
    except OSError as e:
        raise KsmithError(f"{out}: cannot write the model folder: {e}") from e
    return meta


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
