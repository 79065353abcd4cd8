"""Update requests (edit, unlearn) sampled from a world, and the probes derived for them."""

from ksmith.intervene.probes import AVOID, MATCH, ProbeBuilder
from ksmith.intervene.sample import CandidatePool, PlannedRequest, derive_seed, sample_group
from ksmith.intervene.worlds import GroupDiff, WorldIndex, group_diff, values_after

__all__ = [
    "AVOID",
    "MATCH",
    "CandidatePool",
    "GroupDiff",
    "PlannedRequest",
    "ProbeBuilder",
    "WorldIndex",
    "derive_seed",
    "group_diff",
    "sample_group",
    "values_after",
]
