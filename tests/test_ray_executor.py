"""The Ray executor and resume, on a local Ray instance with 2 CPUs (`executor: ray`).

Jobs here are tiny functions of this module, so each test costs about a second of Ray's
scheduling; the pipeline through `dvc repro` is the slow test at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ksmith.errors import KsmithError, SpecError
from ksmith.pipeline.store import CellStore
from ksmith.pipeline.workers import CellFailed, Job, run_jobs

ray = pytest.importorskip("ray")
from ksmith.pipeline.ray_executor import RayOptions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance with 2 CPUs; its workers import ksmith and this module from here."""
    path = os.pathsep.join([str(ROOT), str(Path(__file__).parent)])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", path + os.pathsep + os.environ.get("PYTHONPATH", ""))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()


# -- cells: module-level functions that Ray workers import ----------------------------------


def record(path: str, value: int) -> None:
    """Writes its value, torch's thread count, the process id and TQDM_DISABLE."""
    import torch

    quiet = os.environ.get("TQDM_DISABLE", "-")
    Path(path).write_text(f"{value} {torch.get_num_threads()} {os.getpid()} {quiet}")


def _attempt(counter: Path) -> int:
    """Counts calls in a file (one line per attempt); returns this attempt's number."""
    with open(counter, "a") as f:
        f.write("x\n")
    return len(counter.read_text().splitlines())


def write_cell(value: str, counter: str, *, out: str, die: int = 0, fail: bool = False) -> None:
    """A cell writing its folder atomically; the first `die` attempts kill their own worker
    half-way through the write, `fail` raises an error of the cell's own."""
    import logging

    from ksmith.io import atomic_output_dir

    n = _attempt(Path(counter))
    logging.getLogger("cell").info("attempt %d of %s", n, value)
    if fail:
        raise KsmithError(f"bad hyper-parameter in {value}")
    with atomic_output_dir(out, kind="test-cell") as tmp:
        (tmp / "part1").write_text(value)
        if n <= die:
            os.kill(os.getpid(), signal.SIGKILL)
        (tmp / "part2").write_text(value)


def _jobs(tmp_path: Path, dest: Path, **options) -> list[Job]:
    dest.mkdir(exist_ok=True)
    return [
        Job(
            f"c{i}",
            write_cell,
            (f"v{i}", str(tmp_path / f"count{i}")),
            cost=i,
            kwargs=options.get(f"c{i}", {}),
            out=str(dest / f"c{i}"),
            key=options.get("key", "k") + str(i),
        )
        for i in range(3)
    ]


def _attempts(tmp_path: Path, i: int) -> int:
    path = tmp_path / f"count{i}"
    return len(path.read_text().splitlines()) if path.exists() else 0


# -- tests ------------------------------------------------------------------------------------


def test_every_job_runs_as_a_ray_task(cluster, tmp_path):
    jobs = [Job(f"c{i}", record, (str(tmp_path / f"c{i}"), i), cost=i) for i in range(4)]
    run_jobs(jobs, threads=1, ray=RayOptions(cpus=1))
    rows = [(tmp_path / f"c{i}").read_text().split() for i in range(4)]
    assert [int(r[0]) for r in rows] == list(range(4))
    assert str(os.getpid()) not in {r[2] for r in rows}  # in Ray's worker processes...
    assert {r[1] for r in rows} == {"1"} and {r[3] for r in rows} == {"1"}  # ...set up as ours
    assert ray.is_initialized()  # a Ray the caller started is left running


def test_a_killed_worker_is_retried_and_leaves_no_partial_output(cluster, tmp_path):
    store = CellStore(tmp_path / "state")
    jobs = _jobs(tmp_path, tmp_path / "out", c1={"die": 1})
    run_jobs(jobs, store=store, ray=RayOptions(cpus=1, retries=2))
    assert _attempts(tmp_path, 1) == 2 and _attempts(tmp_path, 0) == 1
    for i in range(3):
        cell = tmp_path / "out" / f"c{i}"
        assert (cell / "part1").read_text() == (cell / "part2").read_text() == f"v{i}"
    assert _stored(store) == ["c0", "c1", "c2"]  # every cell delivered and kept, none half-written
    log = (store.root / "logs" / "c1.log").read_text()
    assert log.count("== cell c1: started") == 2 and "attempt 2 of v1" in log


def test_a_worker_that_keeps_dying_fails_the_stage_after_its_retries(cluster, tmp_path):
    jobs = _jobs(tmp_path, tmp_path / "out", c2={"die": 9})
    with pytest.raises(CellFailed, match=r"cell c2: its worker died 2 time\(s\)"):
        run_jobs(jobs, store=CellStore(tmp_path / "state"), ray=RayOptions(cpus=1, retries=1))
    assert _attempts(tmp_path, 2) == 2


@pytest.mark.parametrize("executor", ["ray", "local"])
def test_a_cells_own_error_fails_once_and_resume_skips_finished_cells(cluster, tmp_path, executor):
    # Locally cells run in order (c2 fails after c0 and c1 finished); on Ray largest cost
    # first (c0 fails last, once a CPU is free), and cells still running are cancelled.
    bad = "c0" if executor == "ray" else "c2"
    options = RayOptions(cpus=1, retries=3) if executor == "ray" else None
    store = CellStore(tmp_path / "state")
    jobs = _jobs(tmp_path, tmp_path / "out", **{bad: {"fail": True}})
    with pytest.raises(CellFailed, match=rf"(?s)cell {bad}: bad hyper-parameter in v.*{bad}\.log"):
        run_jobs(jobs, store=store, ray=options)
    assert _attempts(tmp_path, int(bad[1])) == 1  # never retried
    assert "failed: bad hyper-parameter" in (store.root / "logs" / f"{bad}.log").read_text()
    kept = {p.name.split("-")[0] for p in store.cells.iterdir()}
    assert kept == {"c0", "c1"} if executor == "local" else kept and bad not in kept
    assert not any((tmp_path / "out").iterdir())  # the stage delivered nothing

    before = [_attempts(tmp_path, i) for i in range(3)]
    run_jobs(_jobs(tmp_path, tmp_path / "out"), store=store, ray=options)  # the error fixed
    after = [_attempts(tmp_path, i) for i in range(3)]
    assert [a - b for a, b in zip(after, before, strict=True)] == [
        int(f"c{i}" not in kept) for i in range(3)
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c0", "c1", "c2"]
    assert _stored(store) == ["c0", "c1", "c2"]


def test_a_local_worker_killed_fails_the_stage_and_the_rerun_resumes(tmp_path):
    store = CellStore(tmp_path / "state")
    jobs = _jobs(tmp_path, tmp_path / "out", c0={"die": 1})  # c0 runs last (least cost)
    with pytest.raises(KsmithError, match="a worker process died.*finished cells are kept"):
        run_jobs(jobs, workers=2, store=store)
    kept = {p.name.split("-")[0] for p in store.cells.iterdir() if not p.name.startswith(".")}
    assert kept and "c0" not in kept
    before = [_attempts(tmp_path, i) for i in range(3)]
    run_jobs(_jobs(tmp_path, tmp_path / "out"), store=store)  # in this process
    after = [_attempts(tmp_path, i) for i in range(3)]
    assert [a - b for a, b in zip(after, before, strict=True)] == [
        int(f"c{i}" not in kept) for i in range(3)
    ]
    assert (tmp_path / "out" / "c0" / "part2").read_text() == "v0"
    assert _stored(store) == ["c0", "c1", "c2"]  # the killed attempt's temporary folder is gone


def test_a_stored_cell_with_another_key_is_computed_again(tmp_path):
    store = CellStore(tmp_path / "state")
    with pytest.raises(CellFailed):
        run_jobs(_jobs(tmp_path, tmp_path / "out", c2={"fail": True}), store=store)
    run_jobs(_jobs(tmp_path, tmp_path / "out", key="changed"), store=store)
    assert [_attempts(tmp_path, i) for i in range(3)] == [2, 2, 2]
    assert sorted(p.name for p in store.cells.iterdir()) == [
        f"c{i}-changed{i}" for i in range(3)
    ]  # the stale entries were removed


def test_cells_all_finished_before_are_only_delivered(tmp_path):
    # As after a run killed between its last cell and the move into the output.
    store = CellStore(tmp_path / "state")
    jobs = _jobs(tmp_path, tmp_path / "out")
    store.prepare(jobs)
    for job in jobs:
        write_cell(*job.args, out=str(store.entry(job)))
    run_jobs(jobs, store=store, ray=RayOptions(address="unused: no cell to run"))
    assert [_attempts(tmp_path, i) for i in range(3)] == [1, 1, 1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c0", "c1", "c2"]


def test_the_next_run_computes_only_the_cells_whose_key_changed(tmp_path):
    store = CellStore(tmp_path / "state")
    out = tmp_path / "out"
    run_jobs(_jobs(tmp_path, out), store=store)
    first = {p.name: (p / "part2").read_text() for p in out.iterdir()}
    shutil.rmtree(out)  # as DVC removes a stage's outputs before running it again
    run_jobs(_jobs(tmp_path, out), store=store, workers=2)  # no cell to run: no pool started
    assert [_attempts(tmp_path, i) for i in range(3)] == [1, 1, 1]
    assert {p.name: (p / "part2").read_text() for p in out.iterdir()} == first
    jobs = _jobs(tmp_path, out)
    jobs[1] = dataclasses.replace(jobs[1], key="another")  # c1's inputs changed
    shutil.rmtree(out)
    run_jobs(jobs, store=store)
    assert [_attempts(tmp_path, i) for i in range(3)] == [1, 2, 1]
    assert sorted(p.name for p in store.cells.iterdir()) == ["c0-k0", "c1-another", "c2-k2"]


def _stored(store: CellStore) -> list[str]:
    """What a store's cells folder holds, by job name (a temporary folder starts with a dot)."""
    return sorted(p.name.split("-")[0] for p in store.cells.iterdir())


def test_store_lives_outside_the_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert CellStore.for_output("out/updates/ft_m").root == tmp_path / ".ksmith/out/updates/ft_m"
    assert CellStore.for_output("/elsewhere/x").root == Path("/elsewhere/.ksmith/x")


def test_without_ray_installed_the_error_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    jobs = [Job("c0", record, (str(tmp_path / "c0"), 0))]
    with pytest.raises(KsmithError, match=r"'executor' is ray.*pip install 'ksmith\[ray\]'"):
        run_jobs(jobs, ray=RayOptions())


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"executor": "dask"}, "executor"),
        ({"resources": {"gpus": -1}}, "resources.gpus"),
        ({"resources": {"cpus": 0}}, "resources.cpus"),
        ({"resources": {"retries": -1}}, "resources.retries"),
        ({"resources": {"gpu": 1}}, "resources.gpu"),
    ],
)
def test_bad_executor_params_name_file_and_field(tmp_path, change, field):
    from ksmith.pipeline import load_params

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw.update(change)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as e:
        load_params(path)
    assert str(path) in str(e.value) and f"field '{field}'" in str(e.value)


def test_resources_default_to_threads():
    from ksmith.pipeline import load_params

    params = load_params(ROOT / "params.yaml")
    assert params.executor == "local" and params.ray_address is None
    options = RayOptions.from_params(params.model_copy(update={"threads": 2}))
    assert (options.cpus, options.gpus, options.retries) == (2.0, 0.0, 3)


# -- the pipeline, local and on Ray -----------------------------------------------------------

# Measured wall-clock costs recorded beside the results: the only bytes allowed to differ.
COSTS = {"wall_seconds", "peak_memory_bytes"}


def _masked(path: Path) -> bytes:
    if path.suffix != ".json":
        return path.read_bytes()

    def mask(obj):
        if isinstance(obj, dict):
            return {
                k: "<cost>" if k in COSTS or any(c in k for c in COSTS) else mask(v)
                for k, v in obj.items()
            }
        if isinstance(obj, list):
            return [mask(v) for v in obj]
        return obj

    return json.dumps(mask(json.loads(path.read_text())), sort_keys=True).encode()


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}  # the copied ksmith, in stages and workers
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=1200,
    )  # fmt: skip


@pytest.mark.slow
def test_dvc_repro_on_ray_equals_local(cluster, tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("dvc.yaml", "specs", "ksmith"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, proj / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(
        methods=["ft_m"],
        overrides={"ft_m": {}},
        kinds=["edit"],
        levels=["leaf", "root"],
        scales=[1],
        batch_size=16,
        workers=1,
    )
    params["model"]["world_overrides"] = {
        "max_steps": 20, "curriculum_steps": 0, "eval_every": 10, "eval_sample": 50, "hidden": 32, "intermediate": 64,
        "allow_below_threshold": True,
    }  # fmt: skip
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _run(proj, "dvc", "init", "--no-scm", "-q").returncode == 0
    stages = ["update", "evaluate"]  # the two kinds of cell
    local = _run(proj, "dvc", "repro", *stages)
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    shutil.copytree(proj / "out", tmp_path / "local")

    # The same stages again on the test's Ray instance (2 CPUs), attached by its address; without
    # the stages' cell stores, which would give every finished cell back.
    shutil.rmtree(proj / ".ksmith")
    params.update(executor="ray", ray_address=cluster)
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    on_ray = _run(proj, "dvc", "repro", "--force", "--single-item", *stages)
    assert on_ray.returncode == 0, on_ray.stdout[-3000:] + on_ray.stderr[-3000:]
    assert "(ray)" in on_ray.stderr  # the stages' bars name the executor

    for folder in ("updates", "results"):
        ours, theirs = _files(proj / "out" / folder), _files(tmp_path / "local" / folder)
        assert set(ours) == set(theirs) and len(ours) >= 9
        for name, path in ours.items():
            assert _masked(path) == _masked(theirs[name]), name
    store = proj / ".ksmith" / "out" / "results"
    cells = ["biology.edit.leaf.k1.s0", "biology.edit.root.k1.s0"]
    named = [f"{m}.{c}" for m in ("ft_m", "none") for c in cells]
    assert sorted(p.name for p in (store / "logs").iterdir()) == [f"{n}.log" for n in named]
    # the finished cells stay in the store for the next run, under their keys
    assert sorted(p.name.rsplit("-", 1)[0] for p in (store / "cells").iterdir()) == named
