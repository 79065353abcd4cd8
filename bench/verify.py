"""Peak memory of `ksmith leaderboard verify` on a 10^7-row predictions file: refused early.

    python bench/verify.py [--rows 10000000]

Builds the leaderboard tests' tiny dataset and one honest submission on it (simulated model,
tests/leaderboard_fixtures.py), then a copy of that submission whose predictions.parquet holds
ROWS rows (written in row groups, so building it is bounded too). Each measurement runs in a
fresh process and reports its own peak resident memory: verifying the honest submission,
refusing the big one (the row count is read from the parquet footer before any row is loaded),
and, for scale, only reading the big file into Arrow (what loading it would start with; the
previous verify went on to Python rows, many times more). The last line is one key=value
summary; `ratio` = peak memory refusing the big file / peak memory verifying the honest one
(about 1: refusing costs no more than a normal verify).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(mode: str, folder: str, dataset: str) -> None:
    """Run one measurement in this (fresh) process and print a JSON line."""
    from ksmith.errors import KsmithError

    t0 = time.perf_counter()
    outcome = "ok"
    if mode == "load":
        import pyarrow.parquet as pq

        pq.read_table(Path(folder) / "predictions.parquet")
    else:
        from ksmith.leaderboard import DatasetResolver, verify_submission

        try:
            verify_submission(folder, DatasetResolver([dataset]))
        except KsmithError as e:
            outcome = "refused: " + str(e).split(": ", 2)[-1][:120]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mb": peak_mb, "seconds": time.perf_counter() - t0, "outcome": outcome}))


def measure(mode: str, folder: Path, dataset: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(folder), str(dataset)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_big(src: Path, dst: Path, rows: int, group: int = 1_000_000) -> None:
    """`rows` rows of the honest file's schema, repeating its rows, in bounded memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(src)
    reps = -(-group // table.num_rows)
    block = pa.concat_tables([table] * reps).slice(0, group)
    with pq.ParquetWriter(dst, table.schema, compression="zstd") as w:
        left = rows
        while left > 0:
            w.write_table(block.slice(0, min(group, left)))
            left -= group


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument(
        "--child", nargs=3, metavar=("MODE", "FOLDER", "DATASET"), help=argparse.SUPPRESS
    )
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0

    sys.path.insert(0, str(ROOT / "tests"))
    from leaderboard_fixtures import make_dataset, make_submission

    with tempfile.TemporaryDirectory(prefix="ksmith-bench-verify-") as tmp:
        tmp = Path(tmp)
        ds = make_dataset(tmp / "dataset")
        honest = make_submission(tmp, ds, "honest", "ft", skill=0.8, board=tmp / "board")
        big = tmp / "board" / "submissions" / "big"
        shutil.copytree(honest, big)
        text = (big / "submission.yaml").read_text().replace("id: honest", "id: big", 1)
        (big / "submission.yaml").write_text(text)
        t0 = time.perf_counter()
        write_big(honest / "predictions.parquet", big / "predictions.parquet", args.rows)
        build_s = time.perf_counter() - t0
        file_mb = (big / "predictions.parquet").stat().st_size / 2**20
        print(f"big file: {args.rows} rows, {file_mb:.1f} MB on disk, written in {build_s:.1f}s")

        normal = measure("verify", honest, ds)
        refused = measure("verify", big, ds)
        load = measure("load", big, ds)
        for name, m in (
            ("verify honest", normal),
            ("verify big", refused),
            ("arrow read big", load),
        ):
            print(
                f"{name:15s} peak_mb={m['peak_mb']:7.1f} seconds={m['seconds']:6.2f} {m['outcome']}"
            )
        if normal["outcome"] != "ok" or not refused["outcome"].startswith("refused"):
            print("error: the honest submission must verify and the big one be refused")
            return 1
    ratio = refused["peak_mb"] / normal["peak_mb"]
    print(
        f"ratio={ratio:.3f} refused_peak_mb={refused['peak_mb']:.1f} "
        f"honest_peak_mb={normal['peak_mb']:.1f} refused_s={refused['seconds']:.3f} "
        f"arrow_read_peak_mb={load['peak_mb']:.1f} rows={args.rows} file_mb={file_mb:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
