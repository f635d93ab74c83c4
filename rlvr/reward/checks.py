"""The reward section's config check: each user function loaded and checked here, in the main process, before
any model loads, with errors naming the key (`reward.functions[1].fn: ...`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rlvr.errors import ConfigError
from rlvr.reward.functions import MATH, load_function

if TYPE_CHECKING:
    from rlvr.config import RewardConfig


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(key, message)


def _positive_or_none(value: int | None, key: str) -> None:
    _require(value is None or value >= 1, key, f"must be >= 1 or null (never), got {value}")


def check_reward_config(r: RewardConfig) -> None:
    """Each term names a loadable function once, with a finite weight and a fallback within reward.max_abs;
    accuracy names the math verdict or a term; the fault bounds are sane."""
    _require(
        math.isfinite(r.max_abs) and r.max_abs > 0,
        "reward.max_abs",
        f"must be a finite number > 0, got {r.max_abs}",
    )
    _positive_or_none(r.fail_warn_steps, "reward.fail_warn_steps")
    _positive_or_none(r.fail_max_steps, "reward.fail_max_steps")
    _positive_or_none(r.timeout_skip_after, "reward.timeout_skip_after")
    names = [f.name for f in r.functions]
    for i, f in enumerate(r.functions):
        key = f"reward.functions[{i}]"
        _require(
            bool(f.name) and "/" not in f.name,
            f"{key}.name",
            f"must be a non-empty name without '/', got {f.name!r}",
        )
        _require(names.count(f.name) == 1, f"{key}.name", f"{f.name!r} names two terms")
        _require(math.isfinite(f.weight), f"{key}.weight", f"must be finite, got {f.weight}")
        _require(
            math.isfinite(f.fallback) and abs(f.fallback) <= r.max_abs,
            f"{key}.fallback",
            f"must be finite and within reward.max_abs ({r.max_abs:g}), got {f.fallback}",
        )
        _require(
            (f.name == MATH) == (f.fn == MATH),
            f"{key}",
            "the math verdicts are the term named math with fn math",
        )
        if f.fn != MATH:
            load_function(f.fn, f"{key}.fn")
    _require(
        r.accuracy == MATH or r.accuracy in names,
        "reward.accuracy",
        f"must be math or the name of a reward.functions term ({', '.join(names) or 'none'}), got {r.accuracy!r}",
    )
