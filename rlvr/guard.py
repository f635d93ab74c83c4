"""The divergence guard: a run that cannot learn stops with a message instead of saving broken checkpoints.

Three faults, each met in a real run (a NaN weight in the model, `optim.lr=1e3` typed for 1e-3):
- *a non-finite update*: the learner skips an optimizer step whose gradient norm is not finite (no weight
  changes) and counts it (`learner/nonfinite_steps`); `trainer.max_nonfinite_steps` steps in a row with one stop
  the run;
- *non-finite weights*: a model that loads with them is refused before training, and weights that become
  non-finite stop the run before they are synced, sampled or saved: no checkpoint ever holds them, so
  `keep_last` only ever rotates checkpoints that passed;
- *no learning signal*: a step whose sampled groups all have one reward each (`groups/zero_std_frac` 1: every
  advantage is 0, nothing is learned) warns after `trainer.no_signal_warn_steps` such steps in a row and stops
  the run after `trainer.no_signal_max_steps`.

A stop raises RunDiverged; `rlvr-train` prints its message and exits 1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import torch

from rlvr.errors import RunDiverged

log = logging.getLogger(__name__)


def nonfinite_tensors(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """The names of the tensors holding a NaN or an infinity (of a sharded tensor, this process's shard), with
    one device synchronisation for all of them."""
    names, flags = [], []
    for name, t in named:
        t = t.to_local() if hasattr(t, "to_local") else t  # a DTensor (FSDP2): this rank's shard
        if t.is_floating_point() and t.numel() > 0:
            names.append(name)
            flags.append(torch.isfinite(t.detach()).all())
    if not flags:
        return []
    finite = torch.stack([f.to(flags[0].device) for f in flags]).cpu().tolist()
    return [name for name, ok in zip(names, finite) if not ok]


def describe_nonfinite(names: list[str]) -> str:
    more = f" and {len(names) - 1} more" if len(names) > 1 else ""
    return f"{names[0]}{more}"


class RunGuard:
    """Counts the steps in a row with a skipped non-finite update and with no learning signal; `observe` warns
    and raises RunDiverged past the bounds. `lr` goes into the messages (the commonest cause)."""

    def __init__(
        self,
        max_nonfinite_steps: int,
        no_signal_warn_steps: int | None,
        no_signal_max_steps: int | None,
        lr: float,
    ):
        self.max_nonfinite = max_nonfinite_steps
        self.warn_after, self.stop_after = no_signal_warn_steps, no_signal_max_steps
        self.lr = lr
        self.nonfinite_run = self.no_signal_run = 0

    def observe(self, step: int, metrics: dict) -> None:
        skipped = metrics.get("learner/nonfinite_steps", 0) > 0 or not math.isfinite(
            metrics.get("loss/policy", 0.0)
        )
        self.nonfinite_run = self.nonfinite_run + 1 if skipped else 0
        if skipped:
            log.warning(
                "step %d: a non-finite loss or gradient norm; %d optimizer step(s) skipped, no weight changed",
                step,
                metrics.get("learner/nonfinite_steps", 0),
            )
        if self.nonfinite_run >= self.max_nonfinite:
            raise RunDiverged(
                f"step {step}: {self.nonfinite_run} steps in a row had a non-finite loss or gradient norm "
                f"(trainer.max_nonfinite_steps={self.max_nonfinite}); likely causes: optim.lr too high (now "
                f"{self.lr:g}), non-finite values in the model's weights, or rewards/advantages out of range"
            )
        no_signal = metrics.get("groups/zero_std_frac", 0.0) >= 1.0
        self.no_signal_run = self.no_signal_run + 1 if no_signal else 0
        if not no_signal:
            return
        why = (
            f"{self.no_signal_run} steps in a row with no learning signal: every sampled group got one reward "
            f"for all its answers (reward/mean {metrics.get('reward/mean', float('nan')):.3g}, truncated "
            f"{metrics.get('response/truncated_frac', float('nan')):.0%}), so every advantage is 0"
        )
        causes = (
            f"likely causes: a policy broken by too high an optim.lr (now {self.lr:g}), answers the verifier "
            "cannot read (see samples/), gold answers that do not match the data, or a task far too hard or "
            "already solved for this model"
        )
        if self.stop_after is not None and self.no_signal_run >= self.stop_after:
            raise RunDiverged(f"step {step}: {why} (trainer.no_signal_max_steps={self.stop_after}); {causes}")
        if self.warn_after is not None and self.no_signal_run >= self.warn_after:
            log.warning("step %d: %s; %s", step, why, causes)

    def state_dict(self) -> dict:
        return {"nonfinite_run": self.nonfinite_run, "no_signal_run": self.no_signal_run}

    def load_state_dict(self, state: dict) -> None:
        self.nonfinite_run = state.get("nonfinite_run", 0)
        self.no_signal_run = state.get("no_signal_run", 0)
