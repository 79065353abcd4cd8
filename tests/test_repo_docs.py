"""The repository's own hygiene and the README's documented DVC sweeps."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout"
)
@pytest.mark.parametrize("path", [".venv/lib/site.py", "dvc_plots/index.html"])
def test_local_environments_and_dvc_views_are_ignored(path):
    done = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
    assert done.returncode == 0, f"{path} is not git-ignored"


def set_dotted(tree: dict, key: str, value) -> None:
    """What ``dvc exp run -S key=value`` does to params.yaml: a dotted path into nested keys."""
    *parents, last = key.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[last] = value


def test_readme_sweeps_with_nested_keys_are_valid_params():
    """Every `dvc exp run -S` in the README yields a valid params.yaml, and a nested
    `overrides.<method>.<key>` a valid hyper-parameter for that method on the world model."""
    from ksmith.methods import get_method
    from ksmith.methods.params import resolve_params
    from ksmith.pipeline.params import PipelineParams

    readme = (ROOT / "README.md").read_text()
    runs = [line for line in readme.splitlines() if "dvc exp run" in line and "-S" in line]
    nested = 0
    for line in runs:
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        # `++key=value` (DVC/Hydra: add or override) sets the key like `key=value` does.
        for key, raw in re.findall(r"-S '\+{0,2}([\w.]+)=([^']*)'", line):
            set_dotted(params, key, yaml.safe_load(raw))
        checked = PipelineParams.model_validate(params)
        for method, block in checked.overrides.items():
            if block and method in checked.methods:
                nested += 1
                overrides = [f"{k}={json.dumps(v)}" for k, v in sorted(block.items())]
                resolve_params(
                    get_method(method), model_type="llama", overrides=overrides, num_layers=2
                )
    assert nested, "the README documents no nested -S key (overrides.<method>.<key>)"
