"""Process-wide settings for running models on CPU (imports nothing heavy).

glibc's malloc hands large freed blocks back to the operating system: blocks above a (moving)
size threshold are mmap'ed and unmapped on free, and free memory at the top of the heap is
trimmed. A forward pass allocates and frees the same activation-sized tensors again and again,
so every pass touches fresh pages and takes a page fault on each: measured on the world model,
4,000 to 25,000 minor faults per 2,000-probe scoring call, and a quarter to a third of its time
(inside a VM a fault is dear). Keeping freed memory for reuse removes them; this is what
PyTorch's CPU performance guide gets from jemalloc or tcmalloc, done here with glibc's own
`mallopt`, so nothing is preloaded and nothing is installed.
"""

from __future__ import annotations

import ctypes
import logging

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
