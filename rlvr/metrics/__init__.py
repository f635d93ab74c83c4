"""Metrics: per-token entropy statistics, pass@k, and sinks (metrics.jsonl, console, wandb).

wandb is imported only when a ``WandbSink`` is created.
"""

from rlvr.metrics.entropy_stats import (
    ENTROPY_EDGES_FILENAME,
    ENTROPY_HIST_EDGES,
    entropy_edges,
    entropy_stats,
    write_entropy_edges,
)
from rlvr.metrics.passk import mean_pass_at_k, pass_at_k
from rlvr.metrics.sinks import ConsoleSink, JsonlSink, MetricsLogger, MetricsSink, WandbSink

__all__ = [
    "ENTROPY_EDGES_FILENAME",
    "ENTROPY_HIST_EDGES",
    "ConsoleSink",
    "JsonlSink",
    "MetricsLogger",
    "MetricsSink",
    "WandbSink",
    "entropy_edges",
    "entropy_stats",
    "mean_pass_at_k",
    "pass_at_k",
    "write_entropy_edges",
]
