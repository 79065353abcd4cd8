"""The leaderboard: verified submissions, aggregation, and a page people can read.

A submission (`leaderboard/submissions/<id>/`) is `submission.yaml` (schema.py) plus
`predictions.parquet`; `ksmith submit` builds one from evaluation folders (submit.py), `ksmith
leaderboard verify` recomputes every number from the predictions (verify.py), and `ksmith
leaderboard build` renders README.md, leaderboard.csv and index.html (build.py). The composite
score and why it is a harmonic mean: aggregate.py.
"""

from ksmith.leaderboard.aggregate import (
    COMPONENTS,
    MetricInfo,
    build_tables,
    cell_composite,
    harmonic_mean,
    registry_snapshot,
)
from ksmith.leaderboard.build import BoardPaths, build_board, render_board
from ksmith.leaderboard.checks import DEFAULT_POLICY, BoardPolicy
from ksmith.leaderboard.datasets import DatasetResolver, read_registry
from ksmith.leaderboard.schema import (
    SCHEMA_VERSION,
    Cell,
    MetricValue,
    Submission,
    dump_submission,
    json_schema_text,
    load_submission,
)
from ksmith.leaderboard.submit import SubmitOptions, build_submission, write_submission
from ksmith.leaderboard.verify import (
    SubmissionError,
    Verified,
    verify_all,
    verify_folders,
    verify_submission,
)

__all__ = [
    "COMPONENTS",
    "DEFAULT_POLICY",
    "SCHEMA_VERSION",
    "BoardPaths",
    "BoardPolicy",
    "Cell",
    "DatasetResolver",
    "MetricInfo",
    "MetricValue",
    "Submission",
    "SubmissionError",
    "SubmitOptions",
    "Verified",
    "build_board",
    "build_submission",
    "build_tables",
    "cell_composite",
    "dump_submission",
    "harmonic_mean",
    "json_schema_text",
    "load_submission",
    "read_registry",
    "registry_snapshot",
    "render_board",
    "verify_all",
    "verify_folders",
    "verify_submission",
    "write_submission",
]
