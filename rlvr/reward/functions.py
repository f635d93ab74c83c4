"""Reward functions of the user's own, beside the math verifier (`reward.functions`): loading them, and running
them on one sample inside a worker process.

Each entry names a function `fn(completion: str, row: dict, **kwargs)` returning a float, or a dict of named
floats (summed into its reward, each also logged): `fn` is a built-in (`math`: the math-verify verdicts mapped
by reward.correct/incorrect/no_answer/timeout; `format`: a regex over the completion), `package.module:callable`
(imported with the current directory on the import path, as `python -m` has it) or `path/to/file.py:callable`.
`row` is the dataset row, nested fields included. The step's reward is the weighted sum over the entries
(rlvr.reward.model).

User functions are untrusted code paths over untrusted text, so they run in worker processes
(rlvr.reward.pool.WorkerPool, with a `TermRunner`): one per-sample time limit (reward.timeout_s) covers all of
a sample's functions, and a worker stuck past it is killed. A function that raises, runs out of time, or returns
anything but finite numbers within reward.max_abs gives its `fallback` for that sample, counted in
`reward/<name>/error_frac` and `reward/<name>/timeout_frac`; the run goes on (rlvr.reward.health watches terms
that fail on every sample).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import math
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvr.errors import ConfigError
from rlvr.reward.deadline import DeadlineExceeded, deadline

MATH = "math"
OK, ERROR, TIMEOUT = "ok", "error", "timeout"
SKIPPED = (
    "skipped"  # not run: the term timed out on too many samples of this batch in a row (counted as timeout)
)
DEFAULT_MAX_ABS = 1e6  # reward.max_abs: beyond it a value is a bug (1e300 zeroes every other advantage)

TermResult = tuple[str, dict[str, float], str | None]
"""One term on one sample: (status, {component: value}, the traceback of an error or None)."""


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
    import_dir: str = ""  # where `module:callable` is imported from ("": the current directory)

    @property
    def kwargs(self) -> dict[str, Any]:
        return json.loads(self.kwargs_json)


_loaded: dict[str, Callable[..., Any]] = {}


def _import_module(where: str, import_dir: str) -> Any:
    """`where` imported with `import_dir` (default: the current directory) first on the import path, as
    `python -m` puts it; an entry-point script like rlvr-train has its own bin directory there instead."""
    base = import_dir or os.getcwd()
    if base not in sys.path:
        sys.path.insert(0, base)
    return importlib.import_module(where)


def load_function(fn: str, key: str = "reward.functions", import_dir: str = "") -> Callable[..., Any]:
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
            module = _import_module(where, import_dir)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(key, f"{fn!r}: importing {where} failed ({type(e).__name__}: {e})") from None
    found = getattr(module, attr, None)
    if not callable(found):
        raise ConfigError(key, f"{fn!r}: {where} has no callable {attr!r}")
    _loaded[fn] = found
    return found


def _values(name: str, result: Any, max_abs: float) -> dict[str, float]:
    """A function's result as {component: value}: a float is {name: value}, a dict {name/key: value}. Anything
    else, a non-finite value or one beyond `max_abs` raises: the term failed on this sample."""
    if isinstance(result, dict):
        values = {f"{name}/{k}": float(v) for k, v in result.items()}
    elif isinstance(result, bool) or not isinstance(result, int | float):
        raise TypeError(f"returned {type(result).__name__}, not a float or a dict of floats")
    else:
        values = {name: float(result)}
    bad = {k: v for k, v in values.items() if not (math.isfinite(v) and abs(v) <= max_abs)}
    if bad:
        raise ValueError(f"returned {bad}: not finite, or beyond reward.max_abs={max_abs:g}")
    return values


def _run_one(spec: FunctionSpec, completion: str, row: dict, max_abs: float) -> TermResult:
    try:
        fn = load_function(spec.fn, import_dir=spec.import_dir)
        return OK, _values(spec.name, fn(completion, row, **spec.kwargs), max_abs), None
    except Exception:
        return ERROR, {spec.name: spec.fallback}, traceback.format_exc(limit=5)


def run_functions(
    specs: tuple[FunctionSpec, ...],
    completion: str,
    row_json: str,
    timeout_s: float,
    max_abs: float = DEFAULT_MAX_ABS,
    skip: Iterable[str] = (),
) -> list[TermResult]:
    """Every user function on one sample, under one deadline of `timeout_s`, in order; per function a
    TermResult. A function that fails or is still running at the deadline (and every one after it) gets
    {name: fallback}; those named in `skip` are not run (SKIPPED, fallback). Runs on a worker's main thread."""
    row = json.loads(row_json)
    skip = frozenset(skip)
    out: list[TermResult] = []
    try:
        with deadline(timeout_s):
            for spec in specs:
                if spec.name in skip:
                    out.append((SKIPPED, {spec.name: spec.fallback}, None))
                else:
                    out.append(_run_one(spec, completion, row, max_abs))
    except DeadlineExceeded:  # the term being run, specs[len(out)], and all after it
        pass
    out.extend((TIMEOUT, {spec.name: spec.fallback}, None) for spec in specs[len(out) :])
    return out


@dataclass
class TermRunner:
    """What a reward worker runs on each sample (`run_functions`), and what it stops running.

    A term that hangs costs the whole time limit on every sample: 64 samples, 2 workers and 5 s make 160 s a
    step. So once a term has been the one running at the deadline on `skip_after` samples in a row of one batch
    (in this worker), the rest of that batch's samples here skip it: SKIPPED, its fallback, counted in
    `reward/<name>/timeout_frac` - and the terms after it get their time back. Each batch starts afresh, so a term
    that hung once for a passing reason (a loaded machine) is tried again at the next step. In a row, not in
    total: a term that times out only on some inputs keeps being run on the others. None: never skip.
    Picklable; each worker holds its own copy, hence its own counts.
    """

    specs: tuple[FunctionSpec, ...]
    max_abs: float = DEFAULT_MAX_ABS
    skip_after: int | None = None
    batch: int = -1  # the batch that `hung` counts in
    hung: dict[str, int] = field(default_factory=dict)  # per term, deadlines hit in a row

    def __call__(self, completion: str, row_json: str, batch: int, timeout_s: float) -> list[TermResult]:
        if batch != self.batch:
            self.batch, self.hung = batch, {}
        limit = self.skip_after
        skip = [n for n, k in self.hung.items() if limit is not None and k >= limit]
        out = run_functions(self.specs, completion, row_json, timeout_s, self.max_abs, skip)
        for spec, (status, _, _) in zip(self.specs, out):
            if status in (OK, ERROR):
                self.hung[spec.name] = 0
        # the first TIMEOUT is the term that was running at the deadline; the ones after it never started
        running = next((spec.name for spec, r in zip(self.specs, out) if r[0] == TIMEOUT), None)
        if running is not None:
            self.hung[running] = self.hung.get(running, 0) + 1
        return out

    def warm(self) -> None:
        """Import the functions before the worker says ready, so the first sample's time limit is not spent on
        imports; a failure here shows again on each sample (an error, with its traceback)."""
        from rlvr.reward.math_verifier import warm_math_worker

        warm_math_worker()  # sympy imported, as user terms that use it expect
        for spec in self.specs:
            with contextlib.suppress(Exception):
                load_function(spec.fn, import_dir=spec.import_dir)


def specs_from_config(terms) -> tuple[FunctionSpec, ...]:
    """The user terms of reward.functions (math aside), file paths made absolute and modules tied to the current
    directory, for the workers."""
    specs = []
    for t in terms:
        if t.fn == MATH:
            continue
        fn, import_dir = t.fn, ""
        where, _, attr = fn.rpartition(":")
        if where.endswith(".py"):
            fn = f"{Path(where).expanduser().resolve()}:{attr}"
        else:
            import_dir = os.getcwd()
        kwargs_json = json.dumps(dict(t.kwargs), sort_keys=True)
        specs.append(FunctionSpec(t.name, fn, t.weight, kwargs_json, t.fallback, import_dir))
    return tuple(specs)
