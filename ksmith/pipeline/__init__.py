"""The DVC pipeline: params.yaml, the update matrix, the stages' commands and the report."""

from ksmith.pipeline.matrix import Cell, cells_for, parse_config
from ksmith.pipeline.params import PipelineParams, load_params

__all__ = ["Cell", "PipelineParams", "cells_for", "load_params", "parse_config"]
