"""Reward functions of the user's own, beside the math verifier (`reward.functions`).

Each entry names a function `fn(completion: str, row: dict, **kwargs)` returning a float, or a dict of named
floats (summed into its reward, each also logged): `fn` is a built-in (`math`: the math-verify verdicts mapped
by reward.correct/incorrect/no_answer/timeout; `format`: a regex over the completion), `package.module:callable`
or `path/to/file.py:callable`. `row` is the dataset row, nested fields included. The step's reward is the
weighted sum over the entries.

User functions are untrusted code paths over untrusted text, so they run in the verifier's worker processes
(rlvr.reward.math_verifier.MathVerifier with `run_functions` as its per-sample function): one per-sample time
limit (reward.timeout_s, a SIGALRM deadline) covers all of a sample's functions, and a worker stuck past it is
killed. A function that raises or runs out of time gives its `fallback` for that sample, counted in
`reward/<name>/error_frac` and `reward/<name>/timeout_frac`; the run goes on.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlvr.errors import ConfigError

MATH = "math"
OK, ERROR, TIMEOUT = "ok", "error", "timeout"


def format_reward(completion: str, row: dict, pattern: str, flags: str = "s") -> float:
    """1.0 when `pattern` (Python regex; `flags` from "ims") is found in the completion, else 0.0. E.g.
    `^<think>.+</think>.*\\\\boxed\\{.+\\}` asks for a thought, then a box."""
    bits = 0
    for f in flags:
        bits |= {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}[f]
    return 1.0 if re.search(pattern, completion, bits) else 0.0


BUILTINS: dict[str, Callable[..., Any]] = {"format": format_reward}


@dataclass(frozen=True)
class FunctionSpec:
    """One reward.functions entry, as the workers get it (picklable: the callable is loaded where it runs)."""

    name: str
    fn: str
    weight: float = 1.0
    kwargs_json: str = "{}"  # json: hashable and picklable whatever the values
    fallback: float = 0.0

    @property
    def kwargs(self) -> dict[str, Any]:
        return json.loads(self.kwargs_json)


_loaded: dict[str, Callable[..., Any]] = {}


def load_function(fn: str, key: str = "reward.functions") -> Callable[..., Any]:
    """The callable `fn` names; ConfigError naming `key` when it cannot be had."""
    if fn in _loaded:
        return _loaded[fn]
    if fn in BUILTINS:
        return BUILTINS[fn]
    where, sep, attr = fn.rpartition(":")
    if not sep or not where or not attr:
        raise ConfigError(
            key, f"{fn!r} is neither a built-in ({', '.join([MATH, *BUILTINS])}) nor module:callable"
        )
    try:
        if where.endswith(".py"):
            path = Path(where).expanduser().resolve()
            if not path.is_file():
                raise ConfigError(key, f"{path}: no such file")
            spec = importlib.util.spec_from_file_location(f"rlvr_reward_{abs(hash(str(path)))}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(key, f"{fn!r}: importing {where} failed ({type(e).__name__}: {e})") from None
    found = getattr(module, attr, None)
    if not callable(found):
        raise ConfigError(key, f"{fn!r}: {where} has no callable {attr!r}")
    _loaded[fn] = found
    return found


class _Deadline(BaseException):
    """The sample's time is up (a BaseException: no `except Exception` in a user function eats it)."""


def _on_alarm(signum, frame):
    raise _Deadline


def _values(name: str, result: Any) -> dict[str, float]:
    """A function's result as {component: value}: a float is {name: value}, a dict {name/key: value}."""
    if isinstance(result, dict):
        return {f"{name}/{k}": float(v) for k, v in result.items()}
    if isinstance(result, bool) or not isinstance(result, int | float):
        raise TypeError(f"returned {type(result).__name__}, not a float or a dict of floats")
    return {name: float(result)}


def run_functions(
    specs: tuple[FunctionSpec, ...], completion: str, row_json: str, timeout_s: float
) -> list[tuple[str, dict[str, float], str | None]]:
    """Every user function on one sample, under one SIGALRM deadline of `timeout_s`; per function (status,
    its values, the traceback of an error). A function that raises or is still running at the deadline (and
    every one after it) gets {name: fallback}. Runs on a worker process's main thread."""
    row = json.loads(row_json)
    out: list[tuple[str, dict[str, float], str | None]] = []
    deadline = time.monotonic() + timeout_s
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        for spec in specs:
            left = deadline - time.monotonic()
            if left <= 0:
                out.append((TIMEOUT, {spec.name: spec.fallback}, None))
                continue
            signal.setitimer(signal.ITIMER_REAL, left)
            try:
                try:
                    values = _values(spec.name, load_function(spec.fn)(completion, row, **spec.kwargs))
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                out.append((OK, values, None))
            except _Deadline:
                out.append((TIMEOUT, {spec.name: spec.fallback}, None))
            except Exception:
                out.append((ERROR, {spec.name: spec.fallback}, traceback.format_exc(limit=5)))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return out


def specs_from_config(terms) -> tuple[FunctionSpec, ...]:
    """The user terms of reward.functions (math aside), file paths made absolute for the workers."""
    specs = []
    for t in terms:
        if t.fn == MATH:
            continue
        fn = t.fn
        where, _, attr = fn.rpartition(":")
        if where.endswith(".py"):
            fn = f"{Path(where).expanduser().resolve()}:{attr}"
        specs.append(
            FunctionSpec(t.name, fn, t.weight, json.dumps(dict(t.kwargs), sort_keys=True), t.fallback)
        )
    return tuple(specs)


def term_value(name: str, values: dict[str, float]) -> float:
    """A term's value from one sample's component values: its float, or the sum of its dict's entries."""
    return sum(v for k, v in values.items() if k == name or k.startswith(f"{name}/"))


def combine(terms: list[tuple[str, float]], values: list[dict[str, float]]) -> list[float]:
    """Per sample, the reward: sum over (name, weight) terms of weight x term_value."""
    return [sum(w * term_value(name, v) for name, w in terms) for v in values]


class RewardScorer:
    """The user's reward terms over a batch of samples, in verifier worker processes (see the module doc)."""

    def __init__(self, specs: tuple[FunctionSpec, ...], num_workers: int, timeout_s: float):
        import functools

        from rlvr.reward.math_verifier import MathVerifier

        self.specs = specs
        # no cut of long completions (max_new_tokens bounds them) and no math shortcut: the functions see all
        self.pool = MathVerifier(
            num_workers, timeout_s, max_chars=1 << 40, fast_path=False,
            _verify_fn=functools.partial(run_functions, specs),
        )  # fmt: skip
        self.reported: set[str] = set()

    def score(
        self, texts: list[str], rows_json: list[str]
    ) -> tuple[list[dict[str, float]], list[dict[str, str]]]:
        """(per sample {component: value}, per sample {term: ok | error | timeout}); the first traceback of each
        term is logged once."""
        import logging

        from rlvr.reward.math_verifier import Verdict

        values, statuses = [], []
        for result in self.pool.verify(texts, rows_json):
            if result == Verdict.TIMEOUT:  # the worker was killed: the sample's every term timed out
                result = [(TIMEOUT, {s.name: s.fallback}, None) for s in self.specs]
            merged, status = {}, {}
            for spec, (state, vals, trace) in zip(self.specs, result):
                merged.update(vals)
                status[spec.name] = state
                if trace is not None and spec.name not in self.reported:
                    self.reported.add(spec.name)
                    logging.getLogger(__name__).warning(
                        "reward function %s (%s) raised; its samples get fallback %g (counted in "
                        "reward/%s/error_frac). First traceback:\n%s",
                        spec.name, spec.fn, spec.fallback, spec.name, trace,
                    )  # fmt: skip
            values.append(merged)
            statuses.append(status)
        return values, statuses

    def close(self) -> None:
        self.pool.close()
