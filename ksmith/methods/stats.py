"""Second-moment statistics of MLP keys: C = E[k kᵀ], cached on disk.

ROME (Meng et al. 2022, arXiv 2202.05262, Eq. 2) and MEMIT (Meng et al. 2023, arXiv 2210.07229,
Eq. 14, C₀ = λ E[k kᵀ]) weigh an edit by the uncentered second moment of the keys k, the inputs
of a layer's MLP down-projection, over a generic text corpus. AlphaEdit (Fang et al. 2025, arXiv
2410.02355, Eq. 8) projects onto the null space of the same matrix (K₀K₀ᵀ ∝ E[k kᵀ]).

The statistic is estimated on a *declared* corpus (`StatsSource`: the world's corpus for the
world model, any text list otherwise) over at most ``n_tokens`` tokens, in forward passes of at
most ``batch_tokens`` padded tokens each (never sized from the model's context length). Results
are cached on disk under ``cache_dir`` (default ``$KSMITH_CACHE/stats``, else
``~/.cache/ksmith/stats``), one file per (model fingerprint, layer, corpus fingerprint, token
count, seed), written atomically, so a second run computes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ksmith.errors import KsmithError
from ksmith.models.arch import get_module, layer_path

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

CACHE_ENV = "KSMITH_CACHE"
STATS_FORMAT = 1  # bump when the cached quantity or its keying changes


@dataclass(frozen=True)
class StatsSource:
    """A corpus for second moments: its texts and a fingerprint that names them in the cache."""

    texts: tuple[str, ...]
    fingerprint: str
    name: str = "texts"

    @classmethod
    def from_texts(cls, texts: Iterable[str], name: str = "texts") -> StatsSource:
        items = tuple(t for t in texts if t.strip())
        if not items:
            raise KsmithError(f"statistics corpus {name!r} has no non-empty text")
        h = hashlib.sha256()
        for t in items:
            h.update(t.encode("utf-8"))
            h.update(b"\n")
        return cls(items, h.hexdigest(), name)

    @classmethod
    def from_path(cls, path: str | Path) -> StatsSource:
        """A dataset folder (its ``corpus`` config, via `ksmith.data.load_corpus`), a ``.txt``
        file (one text per line), or a ``.parquet``/``.jsonl`` file with a ``text`` column."""
        p = Path(path).expanduser()
        if p.is_dir():
            from ksmith.data.readers import load_corpus

            texts: list[str] = load_corpus(p)
        elif p.suffix == ".txt" and p.is_file():
            texts = p.read_text(encoding="utf-8").splitlines()
        elif p.suffix == ".parquet" and p.is_file():
            import pyarrow.parquet as pq

            texts = [str(t) for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()]
        elif p.suffix == ".jsonl" and p.is_file():
            lines = p.read_text(encoding="utf-8").splitlines()
            texts = [json.loads(line)["text"] for line in lines if line.strip()]
        else:
            raise KsmithError(
                f"mom2_corpus_path {str(p)!r}: expected a dataset folder, or a .txt, .parquet "
                "or .jsonl file"
            )
        return cls.from_texts(texts, name=str(p))


def default_cache_dir() -> Path:
    """`ksmith.io.cache_dir("stats")`: $KSMITH_CACHE/stats, else ~/.cache/ksmith/stats."""
    from ksmith.io import cache_dir

    return cache_dir("stats")


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over every parameter's name, dtype, shape and bytes (the in-memory weights)."""
    h = hashlib.sha256()
    for name, p in model.state_dict().items():
        t = p.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _cache_file(
    cache_dir: Path, model_fp: str, module: str, source: StatsSource, n: int, seed: int
) -> Path:
    key = json.dumps(
        {
            "format": STATS_FORMAT,
            "model": model_fp,
            "module": module,
            "corpus": source.fingerprint,
            "n_tokens": n,
            "seed": seed,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return cache_dir / model_fp[:16] / f"{module}.{digest}.safetensors"


def _save_atomic(path: Path, tensor: torch.Tensor, meta: dict[str, str]) -> None:
    from ksmith.io import save_safetensors

    save_safetensors({"mom2": tensor.contiguous()}, path, metadata=meta)


def _load(path: Path) -> torch.Tensor | None:
    from safetensors.torch import load_file

    try:
        return load_file(path)["mom2"]
    except FileNotFoundError:
        return None
    except Exception as err:  # noqa: BLE001 - a corrupt cache file is recomputed
        log.warning("ignoring unreadable statistics cache %s (%s)", path, err)
        return None


def select_tokens(
    tokenizer: PreTrainedTokenizerBase,
    source: StatsSource,
    n_tokens: int,
    max_length: int,
    seed: int,
) -> list[list[int]]:
    """Token sequences over which the moment is taken: texts in a seeded random order, each
    cut to `max_length`, until exactly `n_tokens` tokens (or the corpus runs out)."""
    order = list(range(len(source.texts)))
    random.Random(seed).shuffle(order)
    seqs: list[list[int]] = []
    total = 0
    for i in order:
        if total >= n_tokens:
            break
        ids = tokenizer(source.texts[i], add_special_tokens=True)["input_ids"][:max_length]
        ids = ids[: n_tokens - total]
        if ids:
            seqs.append(list(ids))
            total += len(ids)
    return seqs


def _pack(seqs: list[list[int]], batch_tokens: int) -> list[list[list[int]]]:
    """Group sequences (longest first) so each right-padded batch has <= batch_tokens cells."""
    batches: list[list[list[int]]] = []
    current: list[list[int]] = []
    width = 0
    for s in sorted(seqs, key=len, reverse=True):
        new_width = max(width, len(s))
        if current and new_width * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, width = [], 0
            new_width = len(s)
        current.append(s)
        width = new_width
    if current:
        batches.append(current)
    return batches


@torch.no_grad()
def compute_second_moments(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    layers: Sequence[int],
    source: StatsSource,
    *,
    n_tokens: int,
    batch_tokens: int,
    seed: int = 0,
) -> dict[int, torch.Tensor]:
    """E[k kᵀ] of the MLP down-projection input at each of `layers`, in one pass over the corpus.

    Returns layer -> (d_in, d_in) float32 on CPU; accumulated in float64 as Σ k kᵀ / N over the
    N non-padding tokens selected by `select_tokens`.
    """
    from tqdm.auto import tqdm

    if n_tokens < 1 or batch_tokens < 1:
        raise KsmithError(
            f"mom2_n_tokens={n_tokens} and mom2_batch_tokens={batch_tokens} must be >= 1"
        )
    device = next(model.parameters()).device
    seqs = select_tokens(tokenizer, source, n_tokens, max_length=batch_tokens, seed=seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    sums: dict[int, torch.Tensor] = {}
    mask_now: list[torch.Tensor] = []  # the current batch's (B, T) attention mask

    def hook_for(layer: int):
        def hook(_mod, args):
            k = args[0]  # (B, T, d_in)
            keys = k[mask_now[0].bool()].double()  # (n, d_in)
            if layer not in sums:
                sums[layer] = torch.zeros(
                    k.shape[-1], k.shape[-1], dtype=torch.float64, device=k.device
                )
            sums[layer].addmm_(keys.T, keys)

        return hook

    handles = [
        get_module(model, layer_path(model, layer, "mlp_out")).register_forward_pre_hook(
            hook_for(layer)
        )
        for layer in layers
    ]
    total = sum(len(s) for s in seqs)
    try:
        with tqdm(total=total, desc="second moments", unit="tok", disable=None) as bar:
            for batch in _pack(seqs, batch_tokens):
                width = max(len(s) for s in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for b, s in enumerate(batch):
                    ids[b, : len(s)] = torch.tensor(s)
                    mask[b, : len(s)] = 1
                mask_now[:] = [mask.to(device)]
                model(input_ids=ids.to(device), attention_mask=mask.to(device))
                bar.update(int(mask.sum()))
    finally:
        for h in handles:
            h.remove()
    if total == 0:
        raise KsmithError(f"statistics corpus {source.name!r} yields no tokens")
    return {layer: (sums[layer] / total).float().cpu() for layer in layers}


@dataclass(frozen=True)
class MomentSettings:
    """Which statistic to compute and where to cache it (from a method's Params)."""

    n_tokens: int
    batch_tokens: int
    seed: int = 0
    cache_dir: str | None = None


def second_moments(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    layers: Sequence[int],
    source: StatsSource,
    settings: MomentSettings,
    *,
    model_fingerprint: str,
) -> dict[int, torch.Tensor]:
    """Cached `compute_second_moments`: layers already on disk are loaded; the rest are computed
    in one pass and written atomically. Returns layer -> (d_in, d_in) float32 on CPU."""
    cache_dir = Path(settings.cache_dir).expanduser() if settings.cache_dir else default_cache_dir()
    files = {
        layer: _cache_file(
            cache_dir,
            model_fingerprint,
            layer_path(model, layer, "mlp_out"),
            source,
            settings.n_tokens,
            settings.seed,
        )
        for layer in layers
    }
    out: dict[int, torch.Tensor] = {}
    for layer, f in files.items():
        cached = _load(f)
        if cached is not None:
            log.info("second moments for layer %d from cache %s", layer, f)
            out[layer] = cached
    missing = [layer for layer in layers if layer not in out]
    if missing:
        log.info("computing second moments for layers %s on %s", missing, source.name)
        fresh = compute_second_moments(
            model,
            tokenizer,
            missing,
            source,
            n_tokens=settings.n_tokens,
            batch_tokens=settings.batch_tokens,
            seed=settings.seed,
        )
        for layer, c in fresh.items():
            meta = {
                "model": model_fingerprint,
                "corpus": source.fingerprint,
                "corpus_name": source.name,
                "n_tokens": str(settings.n_tokens),
                "seed": str(settings.seed),
                "layer": str(layer),
            }
            _save_atomic(files[layer], c, meta)
            out[layer] = c
    return out
