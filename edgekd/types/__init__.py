"""Frozen dataclasses that cross stage boundaries; each converts to and from plain JSON data.

One import path for all of them (``from edgekd.types import Budget``), kept in a module per stage."""

from edgekd.types.distill import DistillConfig, DistillResult, EpochRecord, kept_calibrated, parse_losses
from edgekd.types.measures import Budget, LatencyStats, Ratio
from edgekd.types.search import Candidate, SearchResult, StudentSpec
from edgekd.types.validation import Artifact, ArtifactReport, Parity, ValidationReport

__all__ = ["Artifact", "ArtifactReport", "Budget", "Candidate", "DistillConfig", "DistillResult", "EpochRecord",
           "LatencyStats", "Parity", "Ratio", "SearchResult", "StudentSpec", "ValidationReport", "kept_calibrated",
           "parse_losses"]
