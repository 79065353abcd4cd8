"""Load any Hugging Face causal LM by local path or Hub id, offline unless asked otherwise.

Nothing is downloaded unless the environment variable ``KSMITH_ALLOW_DOWNLOAD=1`` is set: a
benchmark run must not silently fetch weights. The architecture is checked against the table in
`ksmith.models.arch` before the weights are read, so an unsupported model fails fast.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ksmith.errors import KsmithError
from ksmith.io import file_sha256
from ksmith.models.arch import ARCHITECTURES

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

ALLOW_DOWNLOAD_ENV = "KSMITH_ALLOW_DOWNLOAD"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_DTYPES = ("float32", "float16", "bfloat16", "float64")


def downloads_allowed() -> bool:
    """True when the user opted in to Hub downloads with ``KSMITH_ALLOW_DOWNLOAD=1``."""
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "") == "1"


def resolve_device(device: str | None) -> str:
    """``"auto"`` (or None) -> ``"cuda"`` when available, else ``"cpu"``; others pass through."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise KsmithError(f"device {device!r} requested but CUDA is not available")
    return device


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise KsmithError(f"unknown dtype {dtype!r}; expected one of {', '.join(_DTYPES)}")
    return getattr(torch, dtype)


def _not_found(path_or_id: str, cause: Exception) -> KsmithError:
    if downloads_allowed():
        hint = "the Hub download failed too; check the id, the revision and your network"
    else:
        hint = (
            f"pass a local model folder, or set {ALLOW_DOWNLOAD_ENV}=1 to allow downloading "
            "it from the Hugging Face Hub"
        )
    return KsmithError(f"model {path_or_id!r} not found locally; {hint} ({cause})")


def _hub_kwargs(revision: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"local_files_only": not downloads_allowed()}
    if revision is not None:
        kwargs["revision"] = revision
    return kwargs


def check_architecture(model_type: str | None, where: str) -> None:
    """Raise a clear error unless `model_type` is in `ARCHITECTURES`."""
    if model_type not in ARCHITECTURES:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise KsmithError(
            f"{where}: unsupported architecture model_type={model_type!r}; supported: {supported}"
        )


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None) -> None:
    """Give the tokenizer a pad token (EOS when there is one, else a new ``<pad>``)."""
    if tokenizer.pad_token is not None:
        return
    if tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    else:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
        if model is not None and len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
    if model is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def load_model(
    path_or_id: str | Path,
    *,
    device: str = "auto",
    dtype: str | torch.dtype | None = None,
    revision: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, in eval mode, on `device`.

    `path_or_id` is a local folder (``save_pretrained`` layout) or a Hub id, which must already
    be in the local Hub cache unless ``KSMITH_ALLOW_DOWNLOAD=1``. `dtype` defaults to float32
    (edits and gradients are made in full precision). The tokenizer always has a pad token;
    its padding side is left for the caller to set.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    name = str(path_or_id)
    local = Path(name).expanduser()
    if local.exists() and not local.is_dir():
        raise KsmithError(f"model {name!r}: expected a model folder, found a file")
    source = str(local) if local.is_dir() else name
    if local.is_dir() and not (local / "config.json").exists():
        raise KsmithError(f"model {name!r}: folder has no config.json, so it is not a HF model")
    kwargs = _hub_kwargs(revision)
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        if local.is_dir():
            raise KsmithError(f"model {name!r}: cannot read its config.json: {e}") from e
        raise _not_found(name, e) from e
    check_architecture(getattr(config, "model_type", None), f"model {name!r}")
    dev = resolve_device(device)
    if local.is_dir():
        check_weight_files(local)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, config=config, dtype=_resolve_dtype(dtype), **kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as e:
        raise _not_found(name, e) from e
    except Exception as e:  # noqa: BLE001 - loaders raise many types for a damaged folder
        if not local.is_dir():
            raise
        raise KsmithError(f"{local}: cannot load the model's weights: {e}") from e
    ensure_pad_token(tokenizer, model)
    model.to(dev)
    model.eval()
    log.info("loaded %s (%s) on %s", name, config.model_type, dev)
    return model, tokenizer


def check_weight_files(folder: str | Path) -> None:
    """Every ``*.safetensors`` file of a model folder is whole: a readable header whose tensors
    end exactly at the end of the file (a truncated download or copy is caught before loading,
    as ``error: FILE: ...``)."""
    import json
    import struct

    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            size = path.stat().st_size
            with path.open("rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise ValueError(f"{size} bytes, shorter than the 8-byte header length")
                (n,) = struct.unpack("<Q", head)
                if n > size - 8:
                    raise ValueError(f"a header of {n} bytes in a file of {size}")
                header = json.loads(f.read(n))
            ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
            want = 8 + n + max(ends, default=0)
            if want != size:
                raise ValueError(f"{size} bytes, its header describes {want} (truncated?)")
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            raise KsmithError(f"{path}: unreadable weights file: {e}") from e


def _hub_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The local snapshot folder of a cached Hub model, or None."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        return None


def model_fingerprint(path_or_id: str | Path, revision: str | None = None) -> str:
    """A stable hex sha256 of a model: its config plus the hashes of its weight files.

    A local folder is hashed from its files (canonical ``config.json`` + each weight file's
    sha256, by name). A Hub id is fingerprinted by its resolved commit (the snapshot folder name
    in the cache), so a revision pins the same weights.
    """
    name = str(path_or_id)
    local = Path(name).expanduser()
    h = hashlib.sha256()
    if not local.is_dir():
        snapshot = _hub_snapshot(name, revision)
        if snapshot is None:
            if revision is None:
                raise KsmithError(f"model {name!r} not found locally; cannot fingerprint it")
            h.update(f"hub:{name}@{revision}".encode())
            return h.hexdigest()
        h.update(f"hub:{name}@{snapshot.name}".encode())
        return h.hexdigest()
    config_file = local / "config.json"
    if not config_file.exists():
        raise KsmithError(f"model {name!r}: folder has no config.json")
    config = json.loads(config_file.read_text())
    config.pop("transformers_version", None)  # same weights, different writer
    h.update(json.dumps(config, sort_keys=True).encode())
    weights = sorted(
        p for p in local.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
    )
    if not weights:
        raise KsmithError(f"model {name!r}: no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    for p in weights:
        h.update(f"{p.relative_to(local).as_posix()}:{file_sha256(p)}\n".encode())
    return h.hexdigest()
