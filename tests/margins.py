"""Every float comparison in the suite reports its margin: the bound it is judged by over the error it measured.

A bound tuned to the edge on one CPU fails on another vendor's kernels, which sum float32 in another order. So
each comparison records error / bound, and the end of the run lists the tightest ones: a comparison whose margin
is under 10x on your machine is a failure waiting for another machine (widen the bound with a reason, or compare
against a float64 reference).

Recorded, with no change to the tests that use them:
- `torch.testing.assert_close`: max over elements of |actual - expected| / (atol + rtol * |expected|), with
  torch's default tolerances for the dtype where none are given;
- `torch.allclose`: the same ratio;
- `pytest.approx`: |actual - expected| / tolerance, per scalar (sequences and mappings compare scalar by scalar).
A hand-written comparison uses `within(error, bound, what)`, which asserts and records.

Exact comparisons (a bound of 0) are not margins and are not recorded, nor are those of tests marked
`seeded_statistics`: a seeded sample's distance from its expectation is sampling noise, the same on every machine
(numpy's and torch's CPU generators are), not float rounding. Only calls made from tests/ count (the
libraries under test call torch.allclose too). `RLVR_MARGINS_JSON=path` writes every record to a file.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent
THIS = Path(__file__).resolve()
TIGHT = 0.1  # error / bound above this: a margin under 10x
SHOWN = 5

_records: list[tuple[float, str, str]] = []  # (error / bound, where, test or test [what])
_current_test: str | None = ""  # None: a test whose comparisons are not recorded


def _caller() -> str | None:
    """file:line of the first frame in tests/ outside this module, or None if the call did not come from tests/."""
    frame = sys._getframe(2)
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path != THIS and "_pytest" not in path.parts and "torch" not in path.parts:
            if TESTS in path.resolve().parents:
                return f"{path.relative_to(TESTS)}:{frame.f_lineno}"
            return None
        frame = frame.f_back
    return None


def record(ratio: float, where: str | None = None, what: object = "") -> None:
    where = where or _caller()
    if where is not None and not math.isnan(ratio) and _current_test is not None:
        _records.append((ratio, where, f"{_current_test} [{what}]" if what != "" else _current_test))


def within(error, bound: float, what: object = "") -> None:
    """assert error <= bound (a float or a 0-d tensor), recording error / bound."""
    error = float(error.detach() if isinstance(error, torch.Tensor) else error)
    assert error <= bound, f"{what}: error {error:.3g} > bound {bound:.3g}"
    if bound > 0:
        record(error / bound, _caller(), what)


# torch.testing's default (rtol, atol) by dtype; other dtypes compare exactly
_TORCH_DEFAULTS = {
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-7, 1e-7),
}


def _tensor_ratio(actual, expected, rtol, atol) -> float | None:
    try:
        a, e = torch.as_tensor(actual), torch.as_tensor(expected)
        if rtol is None or atol is None:
            rtol, atol = _TORCH_DEFAULTS.get(torch.promote_types(a.dtype, e.dtype), (0.0, 0.0))
        if a.shape != e.shape or a.numel() == 0 or (rtol == 0 and atol == 0):
            return None
        a, e = a.detach().double().cpu(), e.detach().double().cpu()
        finite = torch.isfinite(e) & torch.isfinite(a)
        bound = atol + rtol * e.abs()
        return float(((a - e).abs() / bound)[finite].max()) if finite.any() else None
    except (TypeError, RuntimeError, ValueError):
        return None  # nested containers and the like: the comparison itself still runs


def install() -> None:
    """Wrap torch.testing.assert_close, torch.allclose and pytest.approx's scalar comparison to record margins."""
    import _pytest.approx

    assert_close, allclose = torch.testing.assert_close, torch.allclose
    approx_eq = _pytest.approx.ApproxScalar.__eq__

    def recording_assert_close(actual, expected, *args, rtol=None, atol=None, **kwargs):
        where = _caller()
        assert_close(actual, expected, *args, rtol=rtol, atol=atol, **kwargs)
        ratio = _tensor_ratio(actual, expected, rtol, atol) if where else None
        if ratio is not None:
            record(ratio, where)

    def recording_allclose(input, other, rtol=1e-5, atol=1e-8, equal_nan=False):
        result = allclose(input, other, rtol=rtol, atol=atol, equal_nan=equal_nan)
        where = _caller()
        ratio = _tensor_ratio(input, other, rtol, atol) if where else None
        if ratio is not None:
            record(ratio, where)
        return result

    def recording_approx_eq(self, actual) -> bool:
        result = approx_eq(self, actual)
        try:
            tolerance, error = float(self.tolerance), float(abs(self.expected - actual))
        except (TypeError, ValueError, ArithmeticError):
            return result  # non-numeric, or an array handled element by element
        if tolerance > 0 and math.isfinite(error):
            record(error / tolerance)
        return result

    torch.testing.assert_close = recording_assert_close
    torch.allclose = recording_allclose
    _pytest.approx.ApproxScalar.__eq__ = recording_approx_eq


def set_current_test(item) -> None:
    global _current_test
    _current_test = None if item.get_closest_marker("seeded_statistics") else item.nodeid


def report(write_line) -> None:
    """The tightest comparisons, one per source line, and how many have a margin under 10x."""
    worst: dict[str, tuple[float, str]] = {}
    for ratio, where, test in _records:
        if ratio >= worst.get(where, (-1.0, ""))[0]:
            worst[where] = (ratio, test)
    if not worst:
        return
    ranked = sorted(worst.items(), key=lambda kv: -kv[1][0])
    tight = sum(1 for _, (ratio, _) in ranked if ratio > TIGHT)
    write_line(
        f"float comparisons: {len(_records)} judged at {len(worst)} source lines; "
        f"{tight} with a margin under {1 / TIGHT:.0f}x (bound / error); the tightest:"
    )
    for where, (ratio, test) in ranked[:SHOWN]:
        margin = "inf" if ratio == 0 else f"{1 / ratio:.3g}x"
        write_line(f"  {margin:>9}  {where}  ({test})")
    if os.environ.get("RLVR_MARGINS_JSON"):
        rows = [{"where": w, "ratio": r, "test": t} for w, (r, t) in ranked]
        Path(os.environ["RLVR_MARGINS_JSON"]).write_text(json.dumps(rows, indent=1) + "\n")
