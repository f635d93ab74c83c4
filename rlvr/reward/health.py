"""A reward term that fails on every sample says so: the run's metrics would otherwise only show
`reward/<term>/error_frac` (or timeout_frac) at 1.0 while the run goes on with exit 0, trained on fallbacks.

`TermFailureGuard` counts, per term, the steps in a row on which the term failed (raised, timed out, was skipped,
or returned a non-finite or too large value) on every sample; it warns naming the term after
`reward.fail_warn_steps` such steps and stops the run (RunDiverged) after `reward.fail_max_steps`, as the
no-signal guard (rlvr.guard) does. None turns either off.
"""

from __future__ import annotations

import logging

from rlvr.errors import RunDiverged

log = logging.getLogger(__name__)

_ALL = 1 - 1e-9  # error_frac + timeout_frac of a term that failed on all n samples (a sum of k/n and (n-k)/n)


class TermFailureGuard:
    def __init__(self, warn_steps: int | None, max_steps: int | None):
        self.warn_steps, self.max_steps = warn_steps, max_steps
        self.runs: dict[str, int] = {}  # per term, the steps in a row it failed on every sample

    def observe(self, step: int, metrics: dict) -> None:
        """Read the step's reward/<term>/error_frac and timeout_frac; warn or raise RunDiverged naming the term."""
        for key in metrics:
            if not (key.startswith("reward/") and key.endswith("/error_frac")):
                continue
            name = key[len("reward/") : -len("/error_frac")]
            errors, timeouts = metrics[key], metrics.get(f"reward/{name}/timeout_frac", 0.0)
            failed = errors + timeouts >= _ALL
            self.runs[name] = self.runs.get(name, 0) + 1 if failed else 0
            if failed:
                self._act(step, name, self.runs[name], errors, timeouts)

    def _act(self, step: int, name: str, run: int, errors: float, timeouts: float) -> None:
        why = (
            f"reward function {name} failed on every sample for {run} step(s) in a row (reward/{name}/error_frac "
            f"{errors:.2f}, timeout_frac {timeouts:.2f}): every sample got its fallback, so it adds nothing to learn "
            "from; see its first traceback in train.log, or raise reward.timeout_s"
        )
        if self.max_steps is not None and run >= self.max_steps:
            raise RunDiverged(f"step {step}: {why} (reward.fail_max_steps={self.max_steps})")
        if self.warn_steps is not None and run >= self.warn_steps:
            log.warning("step %d: %s (stops after reward.fail_max_steps=%s)", step, why, self.max_steps)

    def state_dict(self) -> dict:
        return {"runs": dict(self.runs)}

    def load_state_dict(self, state: dict) -> None:
        self.runs = dict(state.get("runs", {}))
