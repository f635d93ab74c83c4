"""benchmarks/step_time_model.py, by hand: the step-time model of docs/SCALE_OUT.md."""

import importlib.util
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).parent.parent / "benchmarks" / "step_time_model.py"
spec = importlib.util.spec_from_file_location("step_time_model", PATH)
model = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = model  # dataclasses look their module up
spec.loader.exec_module(model)


def test_overlap_hides_the_shorter_of_generation_and_learning():
    p = model.Phases(gen=3.0, verify=0.5, learn=2.0, sync=0.25, other=0.25)
    assert model.step_s(p, 0) == 6.0  # 3 + 0.5 + 2 + 0.25 + 0.25
    assert model.step_s(p, 1) == 4.0  # max(3, 2) + 0.5 + 0.25 + 0.25
    with pytest.raises(ValueError, match="staleness"):
        model.step_s(p, 2)


def test_generation_fit_passes_through_both_points():
    tail, work = model.fit_generation(16, 247.0, 4, 458.0)  # verl's: 16 GPUs 247 s, 4 GPUs 458 s
    assert tail + work / 16 == pytest.approx(247.0) and tail + work / 4 == pytest.approx(458.0)
    assert work == pytest.approx(211.0 / (1 / 4 - 1 / 16))  # 1125.3 GPU-s, tail 176.7 s
