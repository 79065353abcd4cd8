"""The `ksmith` command: a thin shell over the package's pure functions.

Each sub-package contributes its sub-commands through a module with
``register(subparsers) -> None``; each sub-command sets ``func(args) -> int | None``. Handlers
import heavy libraries inside the function, so `ksmith --help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from typing import NoReturn

from ksmith import __version__
from ksmith.errors import KsmithError
from ksmith.runtime import keep_freed_memory, pin_float_kernels

# Torch threads per process unless --threads says otherwise: measured by bench/threads.py on
# the project's shared 2-core machine, one thread beats two for an update and an evaluation of
# the world model (README, "Threads").
DEFAULT_THREADS = 1

# Modules that add sub-commands, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "ksmith.spec.commands",
    "ksmith.data.commands",
    "ksmith.world.commands",
    "ksmith.methods.commands",
    "ksmith.methods.trained.commands",
    "ksmith.models.export",
    "ksmith.evaluate.commands",
    "ksmith.leaderboard.commands",
    "ksmith.pipeline.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ksmith",
        description="Benchmark knowledge editing and unlearning in language models.",
    )
    parser.add_argument("--version", action="version", version=f"ksmith {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help=f"torch CPU threads (default: {DEFAULT_THREADS}, or OMP_NUM_THREADS when set). "
        "On a busy machine spare threads spin-wait for a core (bench/threads.py: an update "
        "and an evaluation 36x slower with 2 threads on 2 busy cores); raise it for a large "
        "model on idle cores.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


_EXIT_NOW = False


def exit_without_teardown() -> None:
    """Ask the `ksmith` executable (`run`) to end as soon as the current command returns,
    skipping the interpreter's teardown (about 0.6 s with torch loaded, paid by every pipeline
    stage). Only for a command whose outputs are complete and that started nothing needing its
    exit handlers (no Ray instance). In-process calls of `main` are not affected."""
    global _EXIT_NOW
    _EXIT_NOW = True


def run() -> NoReturn:
    """The `ksmith` executable: `main`, then exit with its code."""
    code = main()
    if _EXIT_NOW:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors and Ctrl-C end it with one line on stderr, never a traceback.
    Outputs are replaced atomically (ksmith.io), so an interrupted command leaves the previous
    version or the complete new one."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("ksmith: interrupted; outputs left as they were or complete", file=sys.stderr)
        return 130


def set_threads(threads: int | None) -> None:
    """Torch's intra-op threads: `threads`, else OMP_NUM_THREADS when set, else
    `DEFAULT_THREADS`. Torch reads OMP_NUM_THREADS when it starts, so commands that never import
    it (validate, schema, ...) stay as fast as before."""
    if threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return
        threads = DEFAULT_THREADS
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _threads_arg(argv: list[str] | None) -> int | None:
    """The global ``--threads N`` of `argv` (before the sub-command), None when absent or not
    a positive integer (the parser reports that)."""
    args = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(args):
        if arg == "--threads":
            value = args[i + 1] if i + 1 < len(args) else ""
        elif arg.startswith("--threads="):
            value = arg.partition("=")[2]
        elif arg.startswith("-"):
            continue
        else:
            return None  # the sub-command: what follows is its own
        return int(value) if value.isdigit() and int(value) >= 1 else None
    return None


def _main(argv: list[str] | None) -> int:
    # Before the parser imports numpy (via pyarrow): its BLAS reads its thread count once, from
    # OMP_NUM_THREADS, at import. Else numpy ran 2 BLAS threads in a pipeline stage's own
    # process while its workers ran 1, so a cell's float64 products (linear CKA) differed in
    # the last bits with the process that ran it.
    set_threads(_threads_arg(argv))
    pin_float_kernels()  # before torch too: the same float kernels on every x86-64 CPU
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    keep_freed_memory()  # fewer page faults in forward passes (ksmith.runtime)
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    set_threads(args.threads)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KsmithError as e:
        print(f"ksmith {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    run()
