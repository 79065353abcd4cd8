"""Cells as jobs (ksmith.pipeline.cells): keys that follow the inputs, and the per-process
cache of base model and dataset that every executor's workers use (no Ray needed here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import make_model, make_tokenizer

import ksmith.data
import ksmith.models.loading
from ksmith.evaluate.runner import EvalOptions
from ksmith.pipeline import cells
from ksmith.pipeline.matrix import Cell


@pytest.fixture()
def model_dir(tmp_path) -> str:
    path = tmp_path / "model"
    make_model().save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return str(path)


def test_the_cache_loads_once_and_hands_out_copies(model_dir, monkeypatch):
    loads = []

    def load(path, device="auto"):
        loads.append(path)
        return ksmith.models.loading.load_model(path, device=device)

    monkeypatch.setitem(cells._ORIGINAL, "load_model", load)
    cache = cells._InputCache()
    first, _ = cache.model(model_dir, "cpu")
    with torch.no_grad():
        for p in first.parameters():
            p.add_(1.0)  # a cell changes its model in place...
    second, tokenizer = cache.model(model_dir, "cpu")
    fresh, _ = ksmith.models.loading.load_model(model_dir, device="cpu")
    for a, b in zip(second.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # ...and the next one still gets the base weights
    assert second is not first and len(loads) == 1
    assert tokenizer.pad_token is not None


def test_loaders_are_restored_after_a_cell_even_a_failed_one():
    originals = (ksmith.data.load_corpus, ksmith.models.loading.load_model)
    with cells._cached_loaders():
        assert ksmith.data.load_corpus == cells._CACHE.corpus
        assert ksmith.models.loading.load_model == cells._CACHE.model
    with pytest.raises(ZeroDivisionError), cells._cached_loaders():
        raise ZeroDivisionError
    assert (ksmith.data.load_corpus, ksmith.models.loading.load_model) == originals


def _keys(tmp_path: Path, options: EvalOptions) -> dict[str, str]:
    grid = [
        Cell("ft_m", f"biology.edit.leaf.k{k}", "biology", "edit", "leaf", k, 0) for k in (1, 10)
    ]
    jobs = cells.evaluate_jobs(
        grid, model="m", dataset="d", updates=str(tmp_path / "updates"), options=options,
        out=tmp_path / "out",
    )  # fmt: skip
    return {j.name: j.key for j in jobs}


def test_a_cells_key_follows_what_it_depends_on(tmp_path, monkeypatch):
    monkeypatch.setattr(cells, "_inputs", lambda model, dataset: {"model": "m0", "dataset": "d0"})
    for k in (1, 10):
        update = tmp_path / "updates" / f"biology.edit.leaf.k{k}.s0" / "g0"
        update.mkdir(parents=True)
        (update / "delta.safetensors").write_bytes(b"delta")
    options = EvalOptions(batch_size=8)
    keys = _keys(tmp_path, options)
    assert keys == _keys(tmp_path, options) and len(set(keys.values())) == 2  # stable, per cell

    (tmp_path / "updates/biology.edit.leaf.k10.s0/g0/delta.safetensors").write_bytes(b"other")
    changed = _keys(tmp_path, options)
    assert changed["biology.edit.leaf.k1.s0"] == keys["biology.edit.leaf.k1.s0"]
    assert changed["biology.edit.leaf.k10.s0"] != keys["biology.edit.leaf.k10.s0"]

    other = _keys(tmp_path, EvalOptions(batch_size=16))
    assert not set(other.values()) & set(changed.values())  # a setting: every cell
    monkeypatch.setattr(cells, "_inputs", lambda model, dataset: {"model": "m1", "dataset": "d0"})
    assert not set(_keys(tmp_path, options).values()) & set(changed.values())  # the model too
