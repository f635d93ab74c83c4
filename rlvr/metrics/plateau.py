"""Plateau detection on a held-out metric: the trigger of `algo.kl.reset_on_plateau`.

A KL penalty anchors the policy to its reference; once the held-out metric stops improving, the anchor
holds the policy back rather than keeping it safe, and ProRL-style training moves the anchor (reference :=
current policy). This decides when, from the sequence of evaluations alone.
"""

from __future__ import annotations

import math
from typing import Any


class PlateauDetector:
    """Fires when a metric (higher is better) has not improved on its best for ``patience`` consecutive updates.

    "Improved" means strictly above the best so far: a value equal to the best counts as no improvement.
    On firing, the count of stale evaluations restarts from 0 (the best is kept), so a metric that stays flat
    fires again every ``patience`` evaluations. Trainer state (``state_dict``/``load_state_dict``).
    """

    def __init__(self, patience: int) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience = patience
        self.best: float | None = None
        self.stale = 0  # evaluations since the best, or since the last firing

    def update(self, value: float | None) -> bool:
        """Record one evaluation (None or NaN: none took place, nothing changes); True when it fires now."""
        if value is None or math.isnan(value):
            return False
        if self.best is None or value > self.best:
            self.best, self.stale = float(value), 0
            return False
        self.stale += 1
        if self.stale < self.patience:
            return False
        self.stale = 0
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "stale": self.stale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")
        self.stale = int(state.get("stale", 0))
