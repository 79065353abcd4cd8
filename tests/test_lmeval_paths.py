"""Exported lm-eval task folders hold no absolute paths and work after being moved."""

from __future__ import annotations

import shutil

from ksmith.evaluate.lmeval import export_lmeval
from tests.conftest import make_model, make_tokenizer
from tests.test_lmeval import write_dataset


def test_task_folder_is_relative_and_survives_a_move(tmp_path, monkeypatch):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    share = tmp_path / "share"
    ds = write_dataset(share)
    names = export_lmeval(ds, share / "tasks")
    for f in (share / "tasks").iterdir():
        text = f.read_text()
        assert str(tmp_path) not in text, f"{f.name} holds an absolute path"
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(share, moved)
    shutil.rmtree(share)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # relative to the task folder, not the working dir
    out = simple_evaluate(
        model=HFLM(pretrained=make_model("gpt2"), tokenizer=make_tokenizer(), batch_size=4),
        tasks=names[:2],
        task_manager=TaskManager(include_path=str(moved / "tasks"), include_defaults=False),
        bootstrap_iters=0,
        log_samples=False,
    )
    assert out["n-samples"][names[0]]["effective"] == 2  # the two mcq probes to match
    assert out["n-samples"][names[1]]["effective"] == 1  # the avoid probe is left out
