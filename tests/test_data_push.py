"""`ksmith push`: everything up to the network call."""

from __future__ import annotations

import pytest
from test_data_helpers import write_suite

from ksmith.cli import main
from ksmith.data.generate import generate_dataset
from ksmith.io import MARKER


def test_push_uploads_folder(tmp_path, monkeypatch):
    import huggingface_hub

    suite = write_suite(tmp_path / "specs", levels=["leaf"], scales=[1], groups=1, kinds=["edit"])
    out = tmp_path / "ds"
    generate_dataset(suite, out, progress=False)
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create", repo_id, kw))

        def upload_folder(self, **kw):
            calls.append(("upload", kw))
            return type("Info", (), {"commit_url": "https://hub/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert main(["push", str(out), "--repo-id", "org/name", "--private", "--token", "t"]) == 0
    assert calls[0] == ("init", "t")
    assert calls[1] == (
        "create",
        "org/name",
        {"repo_type": "dataset", "private": True, "exist_ok": True},
    )
    kw = calls[2][1]
    assert kw["folder_path"] == str(out) and kw["repo_type"] == "dataset"
    assert MARKER in kw["ignore_patterns"]


@pytest.mark.parametrize("repo", ["noslash", "a/b/c"])
def test_push_rejects_bad_repo_id(tmp_path, repo):
    assert main(["push", str(tmp_path), "--repo-id", repo]) == 2


def test_push_rejects_non_dataset(tmp_path):
    assert main(["push", str(tmp_path), "--repo-id", "org/name"]) == 2
