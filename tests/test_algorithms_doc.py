"""docs/ALGORITHMS.md names, on every row, the code that implements a method and the test that proves it: both
must exist, and every algo preset must appear in it."""

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "ALGORITHMS.md").read_text()
ROWS = [
    line for line in DOC.split("## Methods", 1)[1].splitlines() if line.startswith("| ") and "---" not in line
]
ROWS = ROWS[1:]  # the header


def _cells(row: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]


def _resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def test_every_row_has_an_equation_code_and_a_test():
    assert len(ROWS) >= 15
    for row in ROWS:
        method, paper, code, preset, tests = _cells(row)
        assert paper and preset, method
        assert re.search(r"`rlvr\.[\w.]+`", code), method
        assert re.search(r"`tests/[\w/]+\.py::\w+`", tests), method


@pytest.mark.parametrize("dotted", sorted(set(re.findall(r"`(rlvr\.[\w.]+)`", DOC))))
def test_named_code_exists(dotted):
    assert callable(_resolve(dotted))


@pytest.mark.parametrize("ref", sorted(set(re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", DOC))))
def test_named_tests_exist(ref):
    path, name = ref
    assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.M), f"{path}::{name}"


def test_every_algo_preset_is_described():
    for preset in sorted((ROOT / "configs" / "algo").glob("*.yaml")):
        assert f"`{preset.stem}`" in DOC, preset.stem
