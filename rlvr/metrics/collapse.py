"""Entropy collapse warning: the policy stops exploring long before its accuracy stops improving.

Two triggers on the per-step mean token entropy (nats):
* below ``monitor.entropy_floor``: the policy is close to deterministic on almost every token;
* a fall of more than ``monitor.entropy_drop_frac`` of the highest value seen in the last
  ``monitor.window`` steps: a collapse in progress, whatever the starting level.
The warning fires once per run (``entropy/collapse_warning`` is 1 on that step, 0 on every other step).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any


def collapse_reason(
    history: Sequence[float], floor: float | None, drop_frac: float | None, window: int
) -> str | None:
    """Why the latest mean entropy (``history[-1]``) signals a collapse, or None.

    history: mean entropies of consecutive steps, oldest first; the drop is measured against the highest of
    the last ``window`` steps before the latest. None disables a trigger.
    """
    history = list(history)  # a deque cannot be sliced
    if not history:
        return None
    latest = history[-1]
    if floor is not None and latest < floor:
        return f"mean token entropy {latest:.4g} nats is below monitor.entropy_floor={floor:g}"
    earlier = list(history[-window - 1 : -1])
    if drop_frac is not None and earlier:
        peak = max(earlier)
        if peak > 0 and latest < (1.0 - drop_frac) * peak:
            return (
                f"mean token entropy fell {1 - latest / peak:.0%} (from {peak:.4g} to {latest:.4g} nats) within "
                f"{len(earlier)} steps, more than monitor.entropy_drop_frac={drop_frac:g}"
            )
    return None


class CollapseMonitor:
    """Feeds each step's mean entropy to ``collapse_reason``; fires at most once per run.

    Trainer state (``state_dict``/``load_state_dict``): the last ``window`` + 1 entropies and whether it fired.
    """

    def __init__(self, floor: float | None, drop_frac: float | None, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.floor, self.drop_frac, self.window = floor, drop_frac, window
        self.history: deque[float] = deque(maxlen=window + 1)
        self.fired_at: int | None = None

    def update(self, step: int, mean_entropy: float | None) -> str | None:
        """Record this step's mean entropy (None: not measured); returns the reason when the warning fires now."""
        if mean_entropy is None:
            return None
        self.history.append(float(mean_entropy))
        if self.fired_at is not None:
            return None
        reason = collapse_reason(self.history, self.floor, self.drop_frac, self.window)
        if reason is not None:
            self.fired_at = int(step)
        return reason

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history), "fired_at": self.fired_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = deque((float(h) for h in state.get("history", [])), maxlen=self.window + 1)
        self.fired_at = state.get("fired_at")
