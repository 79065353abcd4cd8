"""`keep_freed_memory`: freed activation-sized blocks are reused without new page faults."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Allocate and free a 20 MiB tensor 8 times, before and after the call, and count the minor
# page faults of the last 6 rounds. glibc's default maps such a block afresh on each round.
SCRIPT = """
import resource, sys, torch
from ksmith.runtime import keep_freed_memory

def faults():
    for _ in range(2):
        torch.ones(5 << 20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(6):
        torch.ones(5 << 20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults()
applied = keep_freed_memory()
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
