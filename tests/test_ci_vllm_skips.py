"""The CI guard in tests/conftest.py: under CI a skipped vLLM test fails the run; elsewhere it is only a skip."""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")

TESTS = """
import pytest

def test_vllm_x():
    pytest.skip("vllm is not installed")

def test_other_skip():
    pytest.skip("not a vLLM test: allowed")

@pytest.mark.xfail(reason="expected failure, not a skip")
def test_vllm_known_bug():
    assert False

def test_passes():
    pass
"""


@pytest.fixture
def suite(pytester):
    pytester.makeconftest(CONFTEST.read_text())  # the real hook, in an isolated pytest run
    pytester.makepyfile(test_suite=TESTS)
    return pytester


def test_skipped_vllm_test_fails_the_run_under_ci(suite, monkeypatch):
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, skipped=2, xfailed=1)
    result.stdout.fnmatch_lines(
        ["*CI is set and 1 vLLM test(s) were skipped*", "*test_suite.py::test_vllm_x"]
    )
    result.stdout.no_fnmatch_line("  *::test_other_skip")  # listed only as a normal skip, if at all


def test_module_skipped_at_collection_counts_too(pytester, monkeypatch):
    monkeypatch.setenv("CI", "1")
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_vllm_module="import pytest\npytest.importorskip('no_such_vllm')\n")
    result = pytester.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*CI is set and 1 vLLM test(s) were skipped*", "  test_vllm_module.py"])


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_skips_are_only_skips_outside_ci(suite, monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    result = suite.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=2, xfailed=1)
    assert "vLLM test(s) were skipped" not in result.stdout.str()
