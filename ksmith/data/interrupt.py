"""Interrupted commands stop cleanly: Ctrl-C or SIGTERM becomes one exception in the main process.

`interrupts_raise()` turns SIGINT and SIGTERM into `Interrupted` (a KeyboardInterrupt), after
stopping worker processes and ignoring further signals, so the `finally` and `except` blocks of
`ksmith.io.atomic_output_dir` remove the half-written output without being cut short. Python
runs a signal handler between any two bytecodes, also inside a `__del__` method or a weakref
callback, where an exception is printed ("Exception ignored in ...") and dropped; so the signal
is also remembered, and `raise_if_interrupted()` (called before an output is put in place, and
when the block ends) raises it again: an interrupted command never finishes normally. Worker
processes are started inside `children_leave_interrupts`: the main process alone decides, so a
Ctrl-C (sent to the whole process group) prints no traceback from a worker.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The command got SIGINT or SIGTERM; `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process stopped by that signal."""
        return 128 + self.signum


_received: list[int] = []  # the signal `_raise` got within the current `interrupts_raise` block


def _raise(signum: int, frame: object) -> None:
    for s in SIGNALS:  # the cleanup that follows must not be interrupted in turn
        signal.signal(s, signal.SIG_IGN)
    _received.append(signum)
    for child in mp.active_children():  # workers: stop now rather than finish their graph
        child.terminate()
    raise Interrupted(signum)


def raise_if_interrupted() -> None:
    """Raise `Interrupted` if a signal came within the current `interrupts_raise` block, even
    when the exception its handler raised was dropped (see the module docstring)."""
    if _received:
        raise Interrupted(_received[0])


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise `Interrupted` (main thread only); a block that
    got one raises it when it ends, if the handler's exception was dropped on the way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in SIGNALS}
    _received.clear()
    for s in SIGNALS:
        signal.signal(s, _raise)
    try:
        yield
        raise_if_interrupted()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _received.clear()


@contextlib.contextmanager
def children_leave_interrupts() -> Iterator[None]:
    """Processes started within the block ignore SIGINT from their first instruction (an
    ignored signal stays ignored across exec, a blocked one does not survive `spawn`), so a
    Ctrl-C sent to the whole process group prints no traceback from a worker still starting up;
    this process stops them (`interrupts_raise`). Keep the block short: a Ctrl-C inside it is
    lost. Workers started later (replacements) call `ignore_interrupts` as their initializer."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def ignore_interrupts() -> None:
    """Worker-process initializer: leave SIGINT to the main process (which stops workers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
