"""A tiny generated world and a random llama over its vocabulary, for the trained editors'
tests (SERAC, MEND); no tests here."""

from __future__ import annotations

from pathlib import Path

from conftest import make_model
from test_data_helpers import write_suite


def make_world(root: Path):
    """(dataset dir, model dir, model, tokenizer) under `root`: one biology world with k = 1
    leaf edits in two groups, and an untrained 2-layer llama saved with the world's tokenizer."""
    from ksmith.data import load_corpus
    from ksmith.data.generate import generate_dataset
    from ksmith.world.tokenizer import train_tokenizer

    dataset = root / "dataset"
    suite = write_suite(root / "specs", kinds=["edit"], levels=["leaf"], scales=[1], groups={1: 2})
    generate_dataset(suite, dataset, progress=False, workers=1)
    tok = train_tokenizer(load_corpus(dataset))
    model = make_model("llama", vocab_size=len(tok), hidden=32)
    model.config.bos_token_id, model.config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    folder = root / "model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return dataset, folder, model, tok


def edit_configs(dataset: Path) -> list[str]:
    from ksmith.data import list_configs

    return [c for c in list_configs(dataset) if ".edit." in c]


def assert_refuses_another_model(tmp_path: Path, dataset: Path, config: str, method: str,
                                 editor: Path, tokenizer) -> None:  # fmt: skip
    """An update with `editor` on a different world model (same vocabulary, other weights) is
    refused: the editor was trained on another model."""
    import pytest

    from ksmith.errors import KsmithError
    from ksmith.methods.commands import UpdateRun, update_from_dataset

    other = tmp_path / "other-model"
    make_model("llama", vocab_size=len(tokenizer), hidden=32, seed=1).save_pretrained(other)
    tokenizer.save_pretrained(other)
    run = UpdateRun(model=str(other), dataset=str(dataset), config=config, method=method,
                    out=str(tmp_path / f"{method}-other"), device="cpu",
                    overrides=(f"editor_path={editor}",))  # fmt: skip
    with pytest.raises(KsmithError, match="another world model"):
        update_from_dataset(run)
