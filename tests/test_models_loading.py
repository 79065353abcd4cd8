"""Model loading: local folders, the Hub cache layout (offline), and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_model, make_tokenizer

from ksmith.errors import KsmithError
from ksmith.models import ARCHITECTURES, load_model, model_fingerprint


def save_tiny(path: Path, arch: str = "llama", seed: int = 0, pad: bool = True) -> Path:
    tok = make_tokenizer()
    if not pad:
        tok.pad_token = None
    model = make_model(arch, vocab_size=len(tok), seed=seed)
    model.config.pad_token_id = None if not pad else model.config.pad_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_load_local_folder(tmp_path, arch):
    path = save_tiny(tmp_path / "m", arch)
    model, tok = load_model(path, device="cpu")
    assert not model.training
    assert model.config.model_type == arch
    assert tok.pad_token is not None
    ref = make_model(arch, vocab_size=len(tok))
    ids = torch.tensor([tok("bira eats grass")["input_ids"]])
    with torch.inference_mode():
        torch.testing.assert_close(model(input_ids=ids).logits, ref(input_ids=ids).logits)


def test_pad_token_is_added_when_missing(tmp_path):
    path = save_tiny(tmp_path / "m", "gpt2", pad=False)
    _model, tok = load_model(path, device="cpu")
    assert tok.pad_token == tok.eos_token


def test_dtype(tmp_path):
    path = save_tiny(tmp_path / "m", "llama")
    model, _ = load_model(path, device="cpu", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(KsmithError, match="dtype"):
        load_model(path, device="cpu", dtype="float8")


def test_missing_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("KSMITH_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(KsmithError, match="not found locally.*KSMITH_ALLOW_DOWNLOAD=1"):
        load_model("ksmith-test/definitely-not-a-cached-model", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KsmithError, match="no config.json"):
        load_model(tmp_path / "empty", device="cpu")


def test_unknown_architecture_lists_supported(tmp_path):
    from transformers import BertConfig

    BertConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(KsmithError, match="model_type='bert'") as err:
        load_model(tmp_path / "bert", device="cpu")
    for name in ARCHITECTURES:
        assert name in str(err.value)


@pytest.mark.slow
def test_hub_cache_layout_offline(tmp_path):
    """A Hub id resolves from the local cache with no network (``local_files_only``)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--ksmith-test--tiny"
    save_tiny(repo / "snapshots" / commit, "llama")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = (
        "from ksmith.models import load_model, model_fingerprint\n"
        "m, t = load_model('ksmith-test/tiny', device='cpu')\n"
        "print(m.config.model_type, model_fingerprint('ksmith-test/tiny'))\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    env.pop("KSMITH_ALLOW_DOWNLOAD", None)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    model_type, fingerprint = out.stdout.split()[-2:]
    assert model_type == "llama"
    assert len(fingerprint) == 64


def test_fingerprint_follows_weights_not_writer(tmp_path):
    a = save_tiny(tmp_path / "a", seed=0)
    b = save_tiny(tmp_path / "b", seed=0)
    c = save_tiny(tmp_path / "c", seed=1)
    cfg = json.loads((b / "config.json").read_text())
    cfg["transformers_version"] = "0.0.0"
    (b / "config.json").write_text(json.dumps(cfg))
    assert model_fingerprint(a) == model_fingerprint(b)
    assert model_fingerprint(a) != model_fingerprint(c)
    with pytest.raises(KsmithError, match="not found locally"):
        model_fingerprint("ksmith-test/definitely-not-a-cached-model")
