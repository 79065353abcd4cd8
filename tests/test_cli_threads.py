"""The `ksmith` command's default torch thread count, and the benchmark that chose it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ksmith.cli import DEFAULT_THREADS

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import sys; from ksmith.cli import main; main(sys.argv[1:]); import torch; "
    "print('threads', torch.get_num_threads())"
)


def _threads(*argv: str, env: dict[str, str] | None = None) -> int:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *argv, "schema"],
        capture_output=True, text=True, env={**clean, **(env or {})}, check=True,
    )  # fmt: skip
    return int(out.stdout.strip().splitlines()[-1].split()[-1])


def test_default_threads_is_the_measured_fastest():
    # bench/threads.py on the project's 2-core machine: one thread beats two (README).
    assert DEFAULT_THREADS == 1
    assert _threads() == 1  # torch's own choice would be every core


def test_threads_option_and_environment_still_win():
    assert _threads("--threads", "2") == 2
    assert _threads(env={"OMP_NUM_THREADS": "2"}) == 2


@pytest.mark.slow
def test_bench_threads_prints_side_by_side_timings_and_a_ratio():
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "threads.py"), "--repeats", "1", "--k", "1",
         "--probes", "16", "--generate", "2", "--methods", "ft_m"],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    lines = out.stdout.strip().splitlines()
    assert "1 thread wall" in lines[1] and "2 threads wall" in lines[1]
    assert lines[2].split()[0] == "update_ft_m" and lines[3].split()[0] == "evaluate"
    summary = dict(kv.split("=") for kv in lines[-1].split())
    assert list(summary)[0] == "ratio" and float(summary["ratio"]) > 0
    assert summary["fastest_threads"] in ("1", "2")


BLAS_PROBE = (
    "import sys; from ksmith.cli import main; main(sys.argv[1:]); "
    "from threadpoolctl import threadpool_info; "
    "print('blas', max(i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'))"
)


@pytest.mark.parametrize("argv", [["--threads", "1"], ["--threads=1", "-v"], []])
def test_numpy_blas_takes_the_thread_count_too(argv):
    """numpy (imported by the parser, via pyarrow) reads its BLAS thread count at import, so
    `--threads` is applied before the parser is built: a stage's own process then runs cells
    with the same float64 products as its workers (linear CKA had differed in the last bits)."""
    pytest.importorskip("threadpoolctl")
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", BLAS_PROBE, *argv, "schema"],
        capture_output=True, text=True, env=clean, check=True,
    )  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == f"blas {DEFAULT_THREADS}"
