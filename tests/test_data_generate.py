"""Dataset materialization: layout, determinism, atomicity, Hub loading, CLI errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_data_helpers import write_suite

from ksmith.cli import main
from ksmith.data import (
    PROBE_COLUMNS,
    REQUEST_COLUMNS,
    list_configs,
    load_corpus,
    load_probes,
    load_requests,
    read_card,
)
from ksmith.data.generate import generate_dataset
from ksmith.errors import KsmithError
from ksmith.io import MARKER


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gen")
    suite = write_suite(root / "specs")
    out = root / "ds"
    generate_dataset(suite, out, progress=False)
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_layout_and_card(dataset):
    card = read_card(dataset)
    configs = list_configs(dataset)
    assert configs == sorted(
        f"biology.{k}.{lv}.k{s}"
        for k in ("edit", "unlearn")
        for lv in ("root", "leaf")
        for s in (1, 5)
    )
    assert len(card["fingerprint"]) == 64 and card["suite"] == "tiny"
    for cfg in configs:
        assert (dataset / "data" / cfg / "test.parquet").is_file()
        probes, requests = load_probes(dataset, cfg), load_requests(dataset, cfg)
        assert card["counts"][cfg] == {
            "requests": len(requests),
            "probes": len(probes),
            "groups": len({r["group"] for r in requests}),
        }
        assert list(probes[0]) == list(PROBE_COLUMNS)
        assert list(requests[0]) == list(REQUEST_COLUMNS)
        assert len({p["id"] for p in probes}) == len(probes)
    assert (dataset / "spec.yaml").is_file() and (dataset / MARKER).is_file()
    assert "# ksmith suite `tiny`" in (dataset / "README.md").read_text()
    assert len(load_corpus(dataset)) > 1000


def test_load_dataset_round_trip(dataset, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = "biology.edit.leaf.k5"
    ds = datasets.load_dataset(str(dataset), name=cfg, cache_dir=str(tmp_path / "cache"))
    assert ds["test"].to_list() == load_probes(dataset, cfg)
    req = datasets.load_dataset(
        str(dataset), name=cfg + ".requests", cache_dir=str(tmp_path / "cache")
    )
    assert req["train"].to_list() == load_requests(dataset, cfg)
    corpus = datasets.load_dataset(str(dataset), name="corpus", cache_dir=str(tmp_path / "cache"))
    assert corpus["train"]["text"] == load_corpus(dataset)


def test_byte_identical_across_processes(tmp_path):
    suite = write_suite(tmp_path / "specs", levels=["leaf"], scales=[1], groups=1, kinds=["edit"])
    outs = [tmp_path / "a" / "ds", tmp_path / "b" / "other"]
    env = {**os.environ, "PYTHONHASHSEED": "random"}
    for i, out in enumerate(outs):
        env["PYTHONHASHSEED"] = str(i + 1)  # different string hashing in each process
        subprocess.run(
            [
                sys.executable,
                "-m",
                "ksmith",
                "generate",
                str(suite),
                "--out",
                str(out),
                "--no-progress",
            ],
            check=True,
            env=env,
            capture_output=True,
        )
    a, b = _files(outs[0]), _files(outs[1])
    assert a.keys() == b.keys() and a == b
    assert read_card(outs[0])["fingerprint"] == read_card(outs[1])["fingerprint"]


def test_parallel_output_is_byte_identical(tmp_path):
    """Graphs generated in worker processes give the same bytes as a serial run."""
    suite = write_suite(
        tmp_path / "specs", graphs=("biology", "physics"), levels=["leaf"], scales=[1, 5],
        groups=1, kinds=["edit"],
    )  # fmt: skip
    serial = generate_dataset(suite, tmp_path / "serial", progress=False, workers=1)
    parallel = generate_dataset(suite, tmp_path / "parallel", progress=False, workers=2)
    a, b = _files(tmp_path / "serial"), _files(tmp_path / "parallel")
    assert a.keys() == b.keys() and a == b
    assert serial.counts == parallel.counts and serial.corpus_lines == parallel.corpus_lines
    assert list(serial.counts) == [
        f"{d}.edit.leaf.k{k}" for d in ("biology", "physics") for k in (1, 5)
    ]


def test_fingerprint_changes_with_the_seed(tmp_path):
    from ksmith.data.generate import build_suite_plan

    a = build_suite_plan(write_suite(tmp_path / "a"))
    b = build_suite_plan(write_suite(tmp_path / "b", seed=8))
    assert a.fingerprint != b.fingerprint


def test_interrupted_write_leaves_previous_output(tmp_path, monkeypatch):
    suite = write_suite(tmp_path / "specs", levels=["leaf"], scales=[1], groups=1)
    out = tmp_path / "ds"
    generate_dataset(suite, out, progress=False)
    before = _files(out)

    import ksmith.data.graphjob as gen

    calls = {"n": 0}
    real = gen.write_columns

    def flaky(path, schema, columns):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk full")
        return real(path, schema, columns)

    monkeypatch.setattr(gen, "write_columns", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_dataset(
            write_suite(tmp_path / "specs2", seed=99, levels=["leaf"], scales=[1], groups=1),
            out,
            progress=False,
        )
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "specs", "specs2"]
    # and with no previous output: nothing at all
    calls["n"] = 0
    with pytest.raises(RuntimeError):
        generate_dataset(suite, tmp_path / "fresh", progress=False)
    assert not (tmp_path / "fresh").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_signal_whose_exception_is_dropped_still_interrupts(tmp_path, monkeypatch, capsys):
    """Python runs a signal handler between any two bytecodes, also inside a `__del__`, where
    the exception it raises is printed and dropped: generate must still stop with 128 + 15 and
    put nothing in place (a CI run once saw it finish with 0 after a SIGTERM)."""
    import signal

    import ksmith.data.graphjob as gen

    suite = write_suite(tmp_path / "specs", levels=["leaf"], scales=[1], groups=1)
    out = tmp_path / "ds"
    generate_dataset(suite, out, progress=False)
    before = _files(out)

    class SignalledWhileCollected:
        def __del__(self):
            signal.raise_signal(signal.SIGTERM)  # the handler runs here, inside __del__

    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: dropped.append(u.exc_type))
    real, calls = gen.write_columns, {"n": 0}

    def signalled(path, schema, columns):
        calls["n"] += 1
        if calls["n"] == 2:
            SignalledWhileCollected()  # collected at once: its __del__ gets the signal
        return real(path, schema, columns)

    monkeypatch.setattr(gen, "write_columns", signalled)
    suite2 = write_suite(tmp_path / "specs2", seed=99, levels=["leaf"], scales=[1], groups=1)
    rc = main(["generate", str(suite2), "--out", str(out), "--no-progress", "--workers", "1"])
    assert dropped and issubclass(dropped[0], KeyboardInterrupt)  # the exception was dropped
    assert rc == 128 + signal.SIGTERM
    assert "interrupted (SIGTERM)" in capsys.readouterr().err
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "specs", "specs2"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers given back


def test_cli_errors_write_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["generate", str(tmp_path / "missing.yaml"), "--out", str(out)]) == 2
    bad = tmp_path / "specs" / "suite.yaml"
    bad.parent.mkdir()
    bad.write_text("kind: suite\nversion: 1\nname: x\nseed: 0\ngraphs: []\ninterventions: i.yaml\n")
    assert main(["generate", str(bad), "--out", str(out)]) == 2
    suite = write_suite(tmp_path / "s2")
    assert main(["generate", str(suite), "--out", str(out), "--size", "huge"]) == 2
    assert "huge" in capsys.readouterr().err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["missing.yaml", "s2", "specs"][1:]


def test_too_small_world_fails_clearly(tmp_path, capsys):
    suite = write_suite(tmp_path / "specs", scales=[1, 1000], groups={1: 1, 1000: 1})
    out = tmp_path / "ds"
    assert main(["generate", str(suite), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "level 'root'" in err and "1000" in err and "only 100" in err and "tiny" in err
    assert not out.exists()


def test_card_front_matter_is_parsed_once_per_file_version(tmp_path, monkeypatch):
    """A stage reads its card many times: parsed once while the file is unchanged, parsed
    again once it is rewritten, and every caller gets its own copy."""
    from ksmith.data import card

    calls = []
    parse = card.load_yaml
    monkeypatch.setattr(card, "load_yaml", lambda *a: calls.append(1) or parse(*a))
    readme = tmp_path / "README.md"
    readme.write_text("---\nksmith: {fingerprint: abc, size: small}\n---\n# card\n")
    first = card.read_card(tmp_path)
    first["size"] = "changed by a caller"
    assert card.read_card(tmp_path) == {"fingerprint": "abc", "size": "small"}
    assert len(calls) == 1
    readme.write_text("---\nksmith: {fingerprint: abcd, size: large}\n---\n# card\n")
    assert card.read_card(tmp_path)["fingerprint"] == "abcd"
    assert len(calls) == 2
    readme.write_text("---\n- not a mapping\n---\n")
    with pytest.raises(KsmithError, match="not a mapping"):
        card.read_card(tmp_path)
