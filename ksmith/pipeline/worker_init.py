"""A stage's worker process: how it is set up (threads, logging, warm-up imports) and how it
ends (without the interpreter's teardown). Used by the local pool (`ksmith.pipeline.workers`)
and by Ray's tasks (`ksmith.pipeline.ray_executor`).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence

log = logging.getLogger(__name__)

# Set in the workers' environment from their start (tqdm reads its defaults when imported):
# the parent shows one bar for the stage, so the cells' own bars are off.
WORKER_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def init_worker(threads: int, warm: Sequence[str] = (), fast_exit: bool = False) -> None:
    """Once per worker process: torch threads, malloc, and logging (warnings on stderr; the
    cell log handler takes INFO). `warm` names modules (``module`` or ``module:attribute``)
    its cells will import, imported now so that a pool started early has them ready. With
    `fast_exit` the process ends without the interpreter's teardown once it is done (see
    `_exit_now`): only for pool workers, whose results are sent before they exit."""
    os.environ["OMP_NUM_THREADS"] = str(threads)  # as `ksmith --threads`; torch reads it at import
    from ksmith.runtime import keep_freed_memory, pin_float_kernels

    pin_float_kernels()  # inherited from `ksmith` already, unless the process was not its child
    import torch

    os.environ.update(WORKER_ENV)
    keep_freed_memory()
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if handler.level == logging.NOTSET:
            handler.setLevel(logging.WARNING)
    for name in warm:
        _warm(name)
    if fast_exit:
        atexit.register(_exit_now)


def _warm(name: str) -> None:
    """Import ``module`` or ``module:attribute`` (a lazy module's attribute, such as a
    transformers model class); a name that does not resolve is only logged."""
    module, _, attribute = name.partition(":")
    try:
        obj = importlib.import_module(module)
        if attribute:
            getattr(obj, attribute)
    except (ImportError, AttributeError) as e:
        log.debug("warm-up import %s: %s", name, e)


def _exit_now() -> None:
    """The last exit handler of a pool worker: flush, then end the process at once. Handlers
    registered before it (torch's, multiprocessing's) are skipped: the worker's results went to
    the parent synchronously, and its outputs were written atomically before."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)
