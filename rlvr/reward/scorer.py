"""The user's reward terms over a batch of samples, in worker processes (the parent's side of
rlvr.reward.functions): each sample's values and statuses, and a warning naming each term that fails."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from rlvr.reward.functions import DEFAULT_MAX_ABS, SKIPPED, TIMEOUT, FunctionSpec, TermRunner
from rlvr.reward.pool import WorkerPool

log = logging.getLogger(__name__)


class TermScorer:
    """`specs` run by `num_workers` workers, `timeout_s` per sample for all of its terms; values beyond `max_abs`
    (or not finite) are errors; a term that hits the deadline on `skip_after` samples in a row is skipped for the
    rest of the batch (TermRunner says why)."""

    def __init__(
        self,
        specs: tuple[FunctionSpec, ...],
        num_workers: int,
        timeout_s: float,
        max_abs: float = DEFAULT_MAX_ABS,
        skip_after: int | None = None,
    ):
        self.specs = specs
        runner = TermRunner(specs, max_abs, skip_after)
        self.pool = WorkerPool(runner, num_workers, timeout_s, warmup=runner.warm, label="reward")
        self.reported: set[str] = set()
        self.batches = 0

    def score(
        self, texts: Sequence[str], rows_json: Sequence[str]
    ) -> tuple[list[dict[str, float]], list[dict[str, str]]]:
        """(per sample {component: value}, per sample {term: ok | error | timeout | skipped}); the first
        traceback of each term is logged once, and each batch that skipped a term says so."""
        self.batches += 1
        results = self.pool.map([(t, r, self.batches) for t, r in zip(texts, rows_json)])
        values, statuses, skipped = [], [], set()
        for result in results:
            if result is None:  # the worker was killed: the sample's every term timed out
                result = [(TIMEOUT, {s.name: s.fallback}, None) for s in self.specs]
            merged, status = {}, {}
            for spec, (state, vals, trace) in zip(self.specs, result):
                merged.update(vals)
                status[spec.name] = state
                if state == SKIPPED:
                    skipped.add(spec.name)
                self._report(spec, trace)
            values.append(merged)
            statuses.append(status)
        for spec in self.specs:
            if spec.name in skipped:
                log.warning(
                    "reward function %s (%s) ran out of time on several samples in a row; the rest of this "
                    "batch skipped it (fallback %g, counted in reward/%s/timeout_frac)",
                    spec.name, spec.fn, spec.fallback, spec.name,
                )  # fmt: skip
        return values, statuses

    def _report(self, spec: FunctionSpec, trace: str | None) -> None:
        if trace is None or spec.name in self.reported:
            return
        self.reported.add(spec.name)
        log.warning(
            "reward function %s (%s) failed; its samples get fallback %g (counted in reward/%s/error_frac). "
            "First traceback:\n%s",
            spec.name, spec.fn, spec.fallback, spec.name, trace,
        )  # fmt: skip

    def close(self) -> None:
        self.pool.close()
