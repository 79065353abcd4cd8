"""`ksmith generate` and `ksmith push`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="materialize a suite spec as a Hugging Face dataset folder",
        description="Build every world of SUITE, sample its requests, derive probes and write "
        "the dataset folder (parquet + dataset card) atomically. Ctrl-C or SIGTERM stops it "
        "and leaves OUT as it was.",
    )
    p.add_argument("suite", help="suite spec (specs/suites/*.yaml)")
    p.add_argument("--out", required=True, help="output dataset folder")
    p.add_argument("--size", default=None, help="size preset for every graph (overrides suite)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes, one graph each (default: min(graphs, 2, CPUs)); output is "
        "byte-identical for any value",
    )
    p.set_defaults(func=_generate)

    p = subparsers.add_parser(
        "push",
        help="upload a generated dataset folder to the Hugging Face Hub",
        description="Create the dataset repo if needed and upload DIR with "
        "huggingface_hub.HfApi().upload_folder.",
    )
    p.add_argument("dir", help="dataset folder written by `ksmith generate`")
    p.add_argument("--repo-id", required=True, help="ORG/NAME of the dataset repo")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    p.set_defaults(func=_push)


def _generate(args: argparse.Namespace) -> int:
    import sys

    from ksmith.data.generate import generate_dataset
    from ksmith.data.interrupt import Interrupted, interrupts_raise

    try:
        with interrupts_raise():
            stats = generate_dataset(
                args.suite,
                args.out,
                size=args.size,
                progress=not args.no_progress,
                workers=args.workers,
            )
    except Interrupted as e:
        print(
            f"ksmith generate: interrupted ({e}); {args.out} left as it was, nothing written",
            file=sys.stderr,
        )
        return e.exit_code
    print(
        f"{stats.out}: {len(stats.counts)} configs, {stats.requests} requests, "
        f"{stats.probes} probes, {stats.corpus_lines} corpus lines; "
        f"fingerprint {stats.fingerprint}"
    )
    return 0


def _push(args: argparse.Namespace) -> int:
    from ksmith.data.push import push_dataset

    url = push_dataset(args.dir, args.repo_id, private=args.private, token=args.token)
    print(url)
    return 0
