"""Bad input never hangs, never eats the machine, never shows a traceback (issue 13, part 1)."""

from __future__ import annotations

import glob
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ksmith.cli import build_parser, main
from ksmith.errors import SpecError
from ksmith.graph.testing import tiny_spec_data
from ksmith.spec import load_spec
from ksmith.spec.limits import Limits
from ksmith.spec.yamlio import load_yaml, read_yaml

ROOT = Path(__file__).resolve().parents[1]


def _validate(capsys, *paths) -> tuple[int, str]:
    rc = main(["validate", *map(str, paths)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def _write_graph(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _write_suite(folder: Path, graph: dict, **intervention) -> Path:
    """suites/s.yaml over graphs/g.yaml (small) and interventions/i.yaml, in `folder`."""
    _write_graph(folder / "graphs" / "g.yaml", graph)
    spec = {"kind": "intervention", "version": 1, "kinds": ["edit"], "levels": ["leaf"],
            "scales": [1], "groups": 1, "seed": 1, "formats": ["cloze"]}  # fmt: skip
    spec.update(intervention)
    _write_graph(folder / "interventions" / "i.yaml", spec)
    suite = {"kind": "suite", "version": 1, "name": "s", "seed": 0,
             "graphs": [{"path": "../graphs/g.yaml", "size": "small"}],
             "interventions": "../interventions/i.yaml"}  # fmt: skip
    return _write_graph(folder / "suites" / "s.yaml", suite)


# -- YAML: one safe reader, bounded -------------------------------------------------------


def test_alias_expansion_under_names_is_refused_quickly(tmp_path, capsys):
    """A "billion laughs" document inside a field: refused at parse time, in well under a
    second, with the file named."""
    lines = ['l0: &l0 ["Ab", "Ab", "Ab", "Ab", "Ab", "Ab", "Ab", "Ab", "Ab", "Ab"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 9)]
    data = tiny_spec_data()
    text = yaml.safe_dump(data, sort_keys=False).replace(
        "names:\n  generator: syllables\n",
        "names:\n  generator: syllables\n  explicit: {leaf: *l8}\n",
    )
    p = tmp_path / "graphs" / "laughs.yaml"
    p.parent.mkdir()
    p.write_text("\n".join(lines) + "\n" + text.replace("kind: graph\n", "", 1))
    build_parser()  # imports done: time only the validation
    t0 = time.perf_counter()
    rc, err = _validate(capsys, p)
    assert time.perf_counter() - t0 < 5  # expanded, 10^9 names: minutes and gigabytes
    assert rc == 2 and f"error: {p}: YAML refused" in err and "aliases" in err


def test_recursive_alias_and_deep_nesting_name_the_file(tmp_path, capsys):
    rec = tmp_path / "graphs" / "rec.yaml"
    rec.parent.mkdir()
    rec.write_text("a: &a [*a]\n")
    deep = tmp_path / "graphs" / "deep.yaml"
    deep.write_text("[" * 100_000 + "]" * 100_000)  # RecursionError before the fix
    deep_block = tmp_path / "graphs" / "deep_block.yaml"
    deep_block.write_text("".join("  " * i + "a:\n" for i in range(3000)) + "  " * 3000 + "b\n")
    rc, err = _validate(capsys, rec, deep, deep_block)
    assert rc == 2
    assert f"error: {rec}: YAML refused at line 1" in err and "recursive alias" in err
    assert f"error: {deep}: YAML refused" in err and "nested deeper than 64" in err
    assert f"error: {deep_block}: YAML refused" in err


def test_binary_and_non_utf8_files_name_the_file(tmp_path, capsys):
    latin = tmp_path / "graphs" / "latin.yaml"
    latin.parent.mkdir()
    latin.write_bytes("kind: graph\nname: caf\xe9\n".encode("latin-1"))
    binary = tmp_path / "graphs" / "bin.yaml"
    binary.write_bytes(bytes(range(256)))
    rc, err = _validate(capsys, latin, binary)
    assert rc == 2
    assert f"error: {latin}: not UTF-8 text: byte 0xe9 at offset 21" in err
    assert f"error: {binary}: binary file" in err
    # generate reads the suite through the same reader
    assert main(["generate", str(latin), "--out", str(tmp_path / "out")]) == 2
    assert "not UTF-8" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_yaml_bounds_are_configurable(monkeypatch):
    text = "a: [[[[[1]]]]]\n"
    assert load_yaml(text, "x.yaml") == {"a": [[[[[1]]]]]}
    with pytest.raises(SpecError, match=r"x.yaml: YAML refused .*deeper than 3"):
        load_yaml(text, "x.yaml", Limits(max_yaml_depth=3))
    monkeypatch.setenv("KSMITH_LIMIT_MAX_YAML_DEPTH", "3")
    with pytest.raises(SpecError, match="KSMITH_LIMIT_MAX_YAML_DEPTH"):
        load_yaml(text, "x.yaml")
    monkeypatch.setenv("KSMITH_LIMIT_MAX_YAML_DEPTH", "lots")
    with pytest.raises(SpecError, match="environment variable KSMITH_LIMIT_MAX_YAML_DEPTH"):
        load_yaml(text, "x.yaml")


def test_large_file_is_refused_before_reading(tmp_path, monkeypatch):
    p = tmp_path / "big.yaml"
    p.write_text("a: " + "x" * 5000 + "\n")
    monkeypatch.setenv("KSMITH_LIMIT_MAX_YAML_BYTES", "1000")
    with pytest.raises(SpecError, match=r"big.yaml: file is 5,004 bytes, more than the limit"):
        read_yaml(p)


# -- sizes computed from the spec, before anything is built -------------------------------


def test_huge_hierarchy_is_refused_with_its_size(tmp_path, capsys):
    data = tiny_spec_data()
    data["names"] = {"generator": "numbered"}
    data["sizes"]["small"]["branching"] = {"root": 1000, "mid": 1000, "leaf": 1000}
    suite = _write_suite(tmp_path, data)
    t0 = time.perf_counter()
    rc, err = _validate(capsys, suite)
    assert rc == 2 and time.perf_counter() - t0 < 10
    assert "field 'sizes.small'" in err and "1,001,001,011 entities" in err
    assert "KSMITH_LIMIT_MAX_ENTITIES" in err
    # the suite names the graph it points to; generate refuses the same way, writing nothing
    assert f"{suite}: field 'graphs.0.path'" in err
    out = tmp_path / "out"
    assert main(["generate", str(suite), "--out", str(out)]) == 2
    assert "1,001,001,011 entities" in capsys.readouterr().err and not out.exists()


def test_entity_limit_is_configurable(monkeypatch):
    biology = ROOT / "specs" / "graphs" / "biology.yaml"
    load_spec(biology)
    monkeypatch.setenv("KSMITH_LIMIT_MAX_ENTITIES", "100000")
    with pytest.raises(SpecError, match=r"size 'large' makes a world of 111,940 entities"):
        load_spec(biology)


def test_many_valued_relations_bound_the_base_facts(tmp_path, capsys, monkeypatch):
    """values_per_subject [1, 10^9] over 100,000 leaves: up to 10^10 facts (and a sampling
    loop of as many tries) -- refused, unless the limit is raised on purpose."""
    data = tiny_spec_data()
    data["relations"]["friend_of"]["values_per_subject"] = [1, 10**9]
    data["sizes"]["large"]["branching"] = {"root": 10, "mid": 100, "leaf": 100}
    path = _write_graph(tmp_path / "graphs" / "g.yaml", data)
    rc, err = _validate(capsys, path)
    assert rc == 2 and "field 'sizes.large'" in err
    assert "may sample up to 10,000,302,030 base facts" in err
    monkeypatch.setenv("KSMITH_LIMIT_MAX_BASE_FACTS", str(10**11))
    assert _validate(capsys, path)[0] == 0


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"groups": 10**9}, "asks for 1,000,000,"),  # 10^9 (+ profile requests)
        ({"contextual_per_request": 10**9}, "probe rows"),
    ],
    ids=["groups", "per-request-probes"],
)
def test_suite_row_count_is_refused_with_its_size(tmp_path, capsys, change, expect):
    suite = _write_suite(tmp_path, tiny_spec_data(), **change)
    rc, err = _validate(capsys, suite)
    assert rc == 2 and expect in err and f"{suite}: field 'interventions'" in err
    out = tmp_path / "out"
    t0 = time.perf_counter()
    assert main(["generate", str(suite), "--out", str(out)]) == 2
    assert time.perf_counter() - t0 < 10 and not out.exists()


# -- interrupted generate, output permissions ---------------------------------------------


def _four_graph_suite(folder: Path) -> Path:
    """Every shipped domain, so that generating takes a few seconds to interrupt."""
    (folder / "suites").mkdir(parents=True)
    suite = {"kind": "suite", "version": 1, "name": "four", "seed": 0,
             "graphs": [{"path": str(ROOT / "specs" / "graphs" / f"{d}.yaml"), "size": "small"}
                        for d in ("biology", "physics", "economics", "history")],
             "interventions": str(ROOT / "specs" / "interventions" / "default.yaml")}  # fmt: skip
    path = folder / "suites" / "four.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "workers"), [("SIGTERM", 1), ("SIGINT", 2)], ids=["sigterm-serial", "ctrl-c-workers"]
)
def test_interrupted_generate_exits_cleanly(tmp_path, sig, workers):
    suite = _four_graph_suite(tmp_path / "specs")
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "ksmith", "generate", str(suite), "--out", str(out),
           "--no-progress", "--workers", str(workers)]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    t0 = time.time()
    while not glob.glob(str(tmp_path / ".ds.tmp-*")) and time.time() - t0 < 60:
        time.sleep(0.02)
    time.sleep(0.3)  # inside the work (worlds, corpora, workers starting): ~2 s on a quiet machine
    assert proc.poll() is None, "generate finished before it could be interrupted"
    signum = getattr(signal, sig)
    if sig == "SIGINT":
        os.killpg(proc.pid, signum)  # as a terminal's Ctrl-C: the whole process group
    else:
        proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum
    lines = [x for x in err.strip().splitlines() if not x.startswith(("INFO ", "WARNING "))]
    assert lines == [f"ksmith generate: interrupted ({sig}); {out} left as it was, nothing written"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["specs"]  # no .ds.tmp-*, no ds


def test_output_folder_follows_the_umask(tmp_path):
    from ksmith.io import atomic_output_dir

    old = os.umask(0o022)
    try:
        with atomic_output_dir(tmp_path / "out", kind="dataset") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755  # was 0o700


def test_dataset_card_front_matter_is_read_safely(tmp_path):
    """A downloaded dataset's card is user input too: same bounded reader."""
    from ksmith.data import read_card
    from ksmith.errors import KsmithError

    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    (tmp_path / "README.md").write_text("---\n" + "\n".join(lines) + "\n---\n\n# card\n")
    t0 = time.perf_counter()
    with pytest.raises(KsmithError, match=r"README.md: YAML refused: expands"):
        read_card(tmp_path)
    assert time.perf_counter() - t0 < 5
    (tmp_path / "README.md").write_bytes(b"---\nksmith: {suite: caf\xe9}\n---\n")
    with pytest.raises(KsmithError, match=r"README.md: not UTF-8 text"):
        read_card(tmp_path)


def _laughs(key: str = "x") -> str:
    lines = [f'{key}0: &{key}0 ["a", "a", "a", "a", "a", "a", "a", "a", "a", "a"]']
    lines += [f"{key}{i}: &{key}{i} [" + ", ".join([f"*{key}{i - 1}"] * 10) + "]"
              for i in range(1, 9)]  # fmt: skip
    return "\n".join(lines) + "\n"


def test_every_yaml_the_project_reads_is_bounded(tmp_path):
    """params.yaml, world-model and method specs, both leaderboard registries, a model card's
    front matter and --set values: each refuses a billion-laughs document, a binary file and
    non-UTF-8 text quickly, with the file named (no traceback, no hang)."""
    from ksmith.leaderboard.datasets import read_registry
    from ksmith.leaderboard.models import read_model_registry
    from ksmith.methods import get_method
    from ksmith.methods.params import parse_override, resolve_params
    from ksmith.pipeline.params import load_params
    from ksmith.world.card import read_model_card
    from ksmith.world.spec import load_world_spec

    readers = {
        "params.yaml": load_params,
        "world.yaml": load_world_spec,
        "datasets.yaml": read_registry,
        "models.yaml": read_model_registry,
        "methods/rome.yaml": lambda p: resolve_params(
            get_method("rome"), model_type="llama", specs_dir=tmp_path
        ),
        "model/README.md": lambda p: read_model_card(p.parent),
    }
    bad = {
        "laughs": (_laughs().encode(), "YAML refused"),
        "binary": (b"a: 1\n\x00\x01", "binary file"),
        "latin1": (b"a: caf\xe9\n", "not UTF-8"),
    }
    for name, read in readers.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for what, (data, message) in bad.items():
            path.write_bytes(b"---\n" + data + b"\n---\n" if name.endswith(".md") else data)
            t0 = time.perf_counter()
            with pytest.raises(SpecError, match=message) as e:
                read(path)
            assert time.perf_counter() - t0 < 5, (name, what)
            assert str(path) in str(e.value), (name, what)
    with pytest.raises(SpecError, match="YAML refused"):
        parse_override("k={" + ", ".join(_laughs().splitlines()) + "}")
    with pytest.raises(SpecError, match="YAML refused"):
        load_world_spec(None, ["lr=[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                               + "[" * 200 + "]" * 264])  # fmt: skip


def test_no_unbounded_yaml_reader_left():
    """Every YAML read goes through ksmith.spec.yamlio (the submission reader refuses aliases
    outright): no bare yaml.safe_load / yaml.load elsewhere."""
    import re

    found = []
    for path in sorted((ROOT / "ksmith").rglob("*.py")):
        if path.name == "yamlio.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"yaml\.(safe_load|load|full_load|unsafe_load)\(", line):
                found.append(f"{path.relative_to(ROOT)}:{i}")
    assert not [f for f in found if not f.startswith("ksmith/leaderboard/schema.py:")], found
