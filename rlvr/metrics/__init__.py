"""Metrics: per-token entropy statistics, logp-advantage covariance, the entropy–performance law, collapse
warning, plateau detection, pass@k, and sinks (metrics.jsonl, console, wandb).

wandb is imported only when a ``WandbSink`` is created.
"""

from rlvr.metrics.collapse import CollapseMonitor, collapse_reason
from rlvr.metrics.covariance import covariance_stats
from rlvr.metrics.entropy_law import (
    EntropyLawFit,
    EntropyLawTracker,
    LawPrediction,
    fit_entropy_law,
    law_prediction,
)
from rlvr.metrics.entropy_stats import (
    ENTROPY_EDGES_FILENAME,
    ENTROPY_HIST_EDGES,
    entropy_above_threshold,
    entropy_by_outcome,
    entropy_edges,
    entropy_stats,
    write_entropy_edges,
)
from rlvr.metrics.passk import mean_pass_at_k, pass_at_k
from rlvr.metrics.plateau import PlateauDetector
from rlvr.metrics.sinks import ConsoleSink, JsonlSink, MetricsLogger, MetricsSink, WandbSink

__all__ = [
    "ENTROPY_EDGES_FILENAME",
    "ENTROPY_HIST_EDGES",
    "CollapseMonitor",
    "ConsoleSink",
    "EntropyLawFit",
    "EntropyLawTracker",
    "JsonlSink",
    "LawPrediction",
    "MetricsLogger",
    "MetricsSink",
    "PlateauDetector",
    "WandbSink",
    "collapse_reason",
    "covariance_stats",
    "entropy_above_threshold",
    "entropy_by_outcome",
    "entropy_edges",
    "entropy_stats",
    "fit_entropy_law",
    "law_prediction",
    "mean_pass_at_k",
    "pass_at_k",
    "write_entropy_edges",
]
