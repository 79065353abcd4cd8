"""A method plugin installed as its own package, exactly as the README's "Adding a method" says:
a decorated class plus an entry point, defaults shipped next to its module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ksmith.errors import KsmithError
from ksmith.registry import Registry
from tests.conftest import make_model, make_tokenizer
from tests.world_fixtures import write_world_dataset

PLUGIN = '''
"""A toy editing method shipped by a third-party package."""

import torch

from ksmith.methods import MethodParams, UpdateMethod, UpdateResult, register_method


class ToyParams(MethodParams):
    scale: float = 0.0
    layers: tuple[int, ...] = (0,)


@register_method
class ToyEdit(UpdateMethod):
    name = "toy_edit"
    kind = "edit"
    paper = "Toy et al. 2026, arXiv 0000.00000"
    Params = ToyParams

    def apply_batch(self, model, tokenizer, problem):
        with torch.no_grad():
            next(model.parameters()).add_(self.params.scale)
        return UpdateResult(log={"scale": self.params.scale})
'''

PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "ksmith-toy-plugin"
version = "0.0.1"

[project.entry-points."ksmith.methods"]
toy_edit = "ksmith_toy.method:ToyEdit"

[tool.setuptools]
packages = ["ksmith_toy"]

[tool.setuptools.package-data]
ksmith_toy = ["*.yaml"]
"""

DEFAULTS = "version: 1\nparams:\n  scale: 0.5\n"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    """The plugin built and installed by pip into its own folder (put on PYTHONPATH)."""
    src = tmp_path_factory.mktemp("plugin-src")
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "ksmith_toy").mkdir()
    (src / "ksmith_toy" / "__init__.py").write_text("")
    (src / "ksmith_toy" / "method.py").write_text(textwrap.dedent(PLUGIN))
    (src / "ksmith_toy" / "toy_edit.yaml").write_text(DEFAULTS)
    target = tmp_path_factory.mktemp("plugin-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(src)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert (target / "ksmith_toy" / "toy_edit.yaml").is_file()
    return target


def write_requests(dataset: Path, config: str) -> None:
    """The config's requests.parquet (the world fixture writes probes only)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ksmith.data.schema import REQUEST_SCHEMA

    rows = [
        {"group": 0, "request_id": "g0.r0", "kind": "edit", "level": "leaf", "subject": "bira",
         "relation": "eats", "object": "grass", "new_object": "meat", "prompt": "bira eats",
         "plus_prompts": ["bira eats"], "plus_answers": ["meat"],
         "minus_prompts": ["karo lives in the"], "minus_answers": ["forest"]}
    ]  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=REQUEST_SCHEMA)
    pq.write_table(table, dataset / "data" / config / "requests.parquet")


def ksmith(plugin_path: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin_path), os.getcwd()]))
    return subprocess.run(
        [sys.executable, "-m", "ksmith.cli", "--threads", "1", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.slow  # pip install plus three `ksmith` processes: about a minute
def test_installed_plugin_is_listed_and_updates_with_its_own_defaults(plugin_path, tmp_path):
    listed = ksmith(plugin_path, "methods", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["toy_edit"]["kind"] == "edit" and "0000.00000" in rows["toy_edit"]["paper"]
    assert "rome" in rows  # built-ins still there

    config = "biology.edit.leaf.k1"
    dataset = write_world_dataset(tmp_path / "dataset", configs=(config,), groups=1)
    write_requests(dataset, config)
    model_dir = tmp_path / "model"
    make_model("gpt2", vocab_size=len(make_tokenizer())).save_pretrained(model_dir)
    make_tokenizer().save_pretrained(model_dir)
    out = tmp_path / "upd"
    run = ksmith(
        plugin_path, "update", "--model", str(model_dir), "--dataset", str(dataset),
        "--config", config, "--method", "toy_edit", "--groups", "0",
        "--device", "cpu", "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    info = json.loads((out / "update.json").read_text())
    assert info["method"] == "toy_edit"
    assert info["params"]["scale"] == 0.5  # from the plugin's own toy_edit.yaml, not ksmith's
    assert info["groups"][0]["changed_parameters"] > 0

    # A plugin's layer fields are checked against the model like the built-ins'.
    bad = ksmith(
        plugin_path, "update", "--model", str(model_dir), "--dataset", str(dataset),
        "--config", config, "--method", "toy_edit", "--set", "layers=[4]",
        "--device", "cpu", "--out", str(tmp_path / "bad"), cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "method 'toy_edit': layers=4 is out of range for a model with 2 layers" in bad.stderr


def test_entry_point_and_decorator_are_one_registration(monkeypatch, tmp_path):
    """The registry half of the recipe, in process: the entry point is recorded lazily, the
    module's decorator fills it; a different object under the name still raises."""
    import importlib

    import ksmith.registry as registry_module

    pkg = tmp_path / "toy_reg_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from ksmith.registry import Registry\nREG = Registry('thing', 'test.things')\n"
    )
    (pkg / "good.py").write_text(
        "from toy_reg_pkg import REG\n@REG.register('toy')\nclass Toy:\n    pass\n"
    )
    (pkg / "clash.py").write_text(
        "from toy_reg_pkg import REG\n@REG.register('toy2')\nclass Toy2:\n    pass\n"
        "class Other:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    class EP:
        def __init__(self, name, value):
            self.name, self.value = name, value

    eps = [EP("toy", "toy_reg_pkg.good:Toy"), EP("toy2", "toy_reg_pkg.clash:Other"),
           EP("toy3", "toy_reg_pkg.missing:X")]  # fmt: skip
    monkeypatch.setattr(registry_module, "entry_points", lambda group: eps)
    reg: Registry = importlib.import_module("toy_reg_pkg").REG
    assert reg.names() == ["toy", "toy2", "toy3"]
    toy = reg.get("toy")
    assert toy.__name__ == "Toy" and reg.meta("toy")["entry_point"] == "toy_reg_pkg.good:Toy"
    with pytest.raises(KsmithError, match="entry point toy_reg_pkg.clash:Other names"):
        reg.get("toy2")
    with pytest.raises(KsmithError, match="cannot import toy_reg_pkg.missing"):
        reg.get("toy3")
    with pytest.raises(KsmithError, match="registered twice"):
        reg.register("toy")(object)


PARAMS = """\
suite: specs/suites/default.yaml
methods: [toy_edit, rome]
kinds: [edit]
levels: [leaf]
scales: [1]
seeds: [0]
"""


@pytest.mark.slow
def test_pipeline_code_fingerprints_follow_the_plugin_code(plugin_path, tmp_path):
    """`ksmith pipeline code` writes out/code/<method>.json; dvc.yaml's update stage lists
    out/code as a dep and each update cell's key holds its method's record, so editing a plugin
    reruns the stage, which computes that plugin's cells and no other."""
    (tmp_path / "params.yaml").write_text(PARAMS)

    def fingerprints() -> dict[str, dict]:
        run = ksmith(plugin_path, "pipeline", "code", "--out", "out/code", cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        return {m: json.loads((tmp_path / f"out/code/{m}.json").read_text()) for m in PARAMS_M}

    first = fingerprints()
    toy = first["toy_edit"]
    assert toy["module"] == "ksmith_toy.method"
    assert set(toy["files"]) == {"__init__.py", "method.py", "toy_edit.yaml"}  # code + defaults
    assert "rome.py" in first["rome"]["files"]
    assert fingerprints() == first  # deterministic
    method_py = plugin_path / "ksmith_toy" / "method.py"
    method_py.write_text(method_py.read_text() + "\n# a change in the plugin\n")
    second = fingerprints()
    assert second["toy_edit"]["sha256"] != toy["sha256"]
    assert second["rome"] == first["rome"]


PARAMS_M = ("toy_edit", "rome")


def test_defaults_order_specs_dir_then_next_to_module_then_ksmith(monkeypatch, tmp_path):
    """`--specs-dir` first, then `<name>.yaml` beside the method's module, then ksmith's own."""
    import importlib

    from ksmith.methods.params import method_spec_path, resolve_params
    from ksmith.methods.source import method_code

    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "toy_single.py").write_text(
        "from ksmith.methods import MethodParams, UpdateMethod, UpdateResult\n"
        "class P(MethodParams):\n    scale: float = 0.0\n"
        "class ToySingle(UpdateMethod):\n    name, kind, paper, Params = 'toy_single', 'edit', "
        "'t', P\n    def apply_batch(self, model, tokenizer, problem):\n"
        "        return UpdateResult()\n"
    )
    (plugin / "toy_single.yaml").write_text(DEFAULTS)
    monkeypatch.syspath_prepend(str(plugin))
    cls = importlib.import_module("toy_single").ToySingle  # not registered: no name clash
    monkeypatch.delenv("KSMITH_SPECS_DIR", raising=False)
    assert method_spec_path("toy_single", method_cls=cls) == plugin / "toy_single.yaml"
    assert resolve_params(cls, model_type=None).scale == 0.5
    mine = tmp_path / "specs"
    (mine / "methods").mkdir(parents=True)
    (mine / "methods" / "toy_single.yaml").write_text("version: 1\nparams:\n  scale: 2.0\n")
    assert resolve_params(cls, model_type=None, specs_dir=mine).scale == 2.0
    monkeypatch.setenv("KSMITH_SPECS_DIR", str(mine))
    assert resolve_params(cls, model_type=None).scale == 2.0
    code = method_code(cls)  # a single-module plugin: the module and its defaults
    assert set(code["files"]) == {"toy_single.py", "toy_single.yaml"}
