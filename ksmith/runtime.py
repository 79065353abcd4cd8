"""Process-wide settings for running models on CPU (imports nothing heavy).

glibc's malloc hands large freed blocks back to the operating system: blocks above a (moving)
size threshold are mmap'ed and unmapped on free, and free memory at the top of the heap is
trimmed. A forward pass allocates and frees the same activation-sized tensors again and again,
so every pass touches fresh pages and takes a page fault on each: measured on the world model,
4,000 to 25,000 minor faults per 2,000-probe scoring call, and a quarter to a third of its time
(inside a VM a fault is dear). Keeping freed memory for reuse removes them; this is what
PyTorch's CPU performance guide gets from jemalloc or tcmalloc, done here with glibc's own
`mallopt`, so nothing is preloaded and nothing is installed.

`pin_float_kernels` pins torch's, MKL's and oneDNN's CPU kernels to AVX2, so that trained
weights do not depend on the CPU's instruction set (docs/world-model.md, "Determinism").
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys

log = logging.getLogger(__name__)

# mallopt parameter numbers (glibc malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to 32 MiB (glibc's largest allowed threshold) come from the heap, and up to 1 GiB
# of free memory may stay at its top. The process keeps its high-water mark, no more.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the system.

    Affects the whole process and lasts until it exits; returns False (and changes nothing)
    where the C library is not glibc, e.g. on macOS or musl.
    """
    try:
        libc = ctypes.CDLL(None)  # this process's own symbols, the C library's among them
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 -- glibc only: musl also has a mallopt
    except (OSError, AttributeError, TypeError):
        log.debug("not glibc: malloc left as it is")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    done = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and done


FLOAT_KERNELS_ENV = "KSMITH_FLOAT_KERNELS"  # "avx2" (default) or "native": each library's own pick
PINNED_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _has_avx2() -> bool:
    """Whether this is an x86-64 Linux machine whose CPU reports AVX2."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx2" in line.split()
    except OSError:
        pass
    return False


def pin_float_kernels() -> dict[str, str]:
    """Make torch, MKL and oneDNN use their AVX2 kernels on any x86-64 CPU that has AVX2, so
    that the same spec trains closer to the same bytes on AVX2 and AVX-512 machines: each library
    picks kernels (softmax, exp, norms, reductions, the optimizer's arithmetic, sgemm, matmul)
    by the CPU's instruction set, AVX-512 and AVX2 ones round differently in the last bits,
    and over the world model's 20,000 steps that gave another model (fluency 0.943 against
    0.894 from the same spec, data and library versions). AVX2 is the level every x86-64 CPU
    the project runs on has. Sets the
    libraries' own environment variables (`PINNED_KERNELS`) where they are not set already
    (a value the user set wins); returns those it set. Must run before torch is imported
    (each library reads its variable once, when it first dispatches a kernel): `ksmith`
    calls it first thing, and spawned workers inherit the environment. Does nothing with
    ``KSMITH_FLOAT_KERNELS=native``, on other architectures, or on a CPU without AVX2.

    MKL honours its branch (``MKL_CBWR``) on Intel CPUs; on AMD CPUs it takes its own
    dispatch, which does not use AVX-512 there. `float_kernels` says what torch runs. The pin
    is not the whole story: an AVX-512 Intel machine and an AVX2 one trained the default world
    model to other bytes with it (measured, `cpu_model`), so a card names the CPU too."""
    mode = os.environ.get(FLOAT_KERNELS_ENV, "avx2").strip().lower()
    if mode == "native" or not _has_avx2():
        return {}
    if mode != "avx2":
        log.warning("%s=%s: expected avx2 or native; using avx2", FLOAT_KERNELS_ENV, mode)
    if "torch" in sys.modules:
        log.debug("torch already imported: float kernels may not follow the pin")
    added = {k: v for k, v in PINNED_KERNELS.items() if k not in os.environ}
    os.environ.update(added)
    return added


def cpu_model() -> str:
    """The CPU this process runs on, as /proc/cpuinfo names it (vendor, family and model
    numbers, model name), or the platform's processor string elsewhere. Pinned float kernels
    do not make trained bytes the same on every CPU: the default world model trained on an
    AVX2 machine and on an AVX-512 Intel one (GenuineIntel family 6 model 167) gave other weights from
    the same spec, data, versions and pinned kernels (2026-12-04), so a card records it."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    if "vendor_id" not in fields:
        return platform.processor() or platform.machine() or "unknown"
    return (
        f"{fields['vendor_id']} family {fields.get('cpu family', '?')} model "
        f"{fields.get('model', '?')} ({fields.get('model name', '?')})"
    )


def float_kernels() -> str:
    """The instruction set of torch's vectorised CPU kernels in this process (``AVX2``,
    ``AVX512``, ``DEFAULT``, ...): part of what makes trained weights reproducible."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())
