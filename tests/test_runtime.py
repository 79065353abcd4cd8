"""`keep_freed_memory`: freed activation-sized blocks are reused without new page faults.
`pin_float_kernels`: torch, MKL and oneDNN pinned to their AVX2 kernels unless told otherwise."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ksmith import runtime
from ksmith.cli import main

# Allocate and free a 20 MiB tensor again and again and count the minor page faults of the
# steady state (the second of two runs of 8 rounds, its last 6 rounds), before and after the
# call. Before, malloc is put back to glibc's documented starting values (mmap and trim
# thresholds of 128 KiB; left alone, glibc moves them as blocks are freed, so what it does in a
# process that has run for a while depends on its history): the block is then mapped afresh,
# and faulted in, on every round.
SCRIPT = """
import ctypes, resource, sys, torch
from ksmith.runtime import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, keep_freed_memory

libc = ctypes.CDLL("libc.so.6")
assert libc.mallopt(M_MMAP_THRESHOLD, 128 << 10) == 1
assert libc.mallopt(M_TRIM_THRESHOLD, 128 << 10) == 1

def faults():
    for _ in range(2):
        torch.ones(5 << 20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(6):
        torch.ones(5 << 20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults()
default = faults()
applied = keep_freed_memory()
faults()
print(default, int(applied), faults())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_freed_memory_is_reused_without_page_faults():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True
    ).stdout
    default, applied, kept = map(int, out.split())
    assert applied == 1
    pages = 6 * (20 << 20) // 4096
    assert default > pages // 2  # each round faulted the block's pages in again
    assert kept < pages // 20  # ... and now none of them


@pytest.fixture
def unpinned(monkeypatch):
    """No kernel variable set, `KSMITH_FLOAT_KERNELS` unset, and a CPU with AVX2."""
    for name in (*runtime.PINNED_KERNELS, runtime.FLOAT_KERNELS_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runtime, "_has_avx2", lambda: True)
    return monkeypatch


def test_pin_sets_each_librarys_variable_and_a_users_own_value_wins(unpinned):
    import os

    unpinned.setenv("MKL_CBWR", "COMPATIBLE")
    added = runtime.pin_float_kernels()
    assert added == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert os.environ["MKL_CBWR"] == "COMPATIBLE"
    assert runtime.pin_float_kernels() == {}  # set once; a second call changes nothing


@pytest.mark.parametrize("native", ["native", "no-avx2"])
def test_native_or_a_cpu_without_avx2_leaves_the_kernels_alone(unpinned, native):
    import os

    if native == "native":
        unpinned.setenv(runtime.FLOAT_KERNELS_ENV, "Native")
    else:
        unpinned.setattr(runtime, "_has_avx2", lambda: False)
    assert runtime.pin_float_kernels() == {}
    assert not any(name in os.environ for name in runtime.PINNED_KERNELS)


def test_the_ksmith_command_pins_before_anything_imports_torch(unpinned):
    import os

    with pytest.raises(SystemExit):
        main(["--version"])
    assert {k: os.environ[k] for k in runtime.PINNED_KERNELS} == runtime.PINNED_KERNELS
