"""Update requests (edit, unlearn) sampled from a world, and the probes derived for them."""

from ksmith.intervene.columns import Columns, Draws, random_order
from ksmith.intervene.probes import AVOID, MATCH, ProbeBuilder
from ksmith.intervene.reverse import ReversePlan, plan_reverse
from ksmith.intervene.sample import CandidatePool, PlannedRequest, derive_seed, sample_group
from ksmith.intervene.worlds import GroupDiff, WorldIndex, group_diff, values_after

__all__ = [
    "AVOID",
    "MATCH",
    "CandidatePool",
    "Columns",
    "Draws",
    "GroupDiff",
    "PlannedRequest",
    "ProbeBuilder",
    "ReversePlan",
    "WorldIndex",
    "derive_seed",
    "group_diff",
    "plan_reverse",
    "random_order",
    "sample_group",
    "values_after",
]
