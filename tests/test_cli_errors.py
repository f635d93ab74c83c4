"""The real `rlvr-train` command stops on bad input with one line naming the problem, before any model work.

RLVR_CACHE_DIR points at an empty directory: building the embedded model there would take minutes and leave
a `tiny-addition/` directory behind, so an empty cache afterwards proves no build was attempted.
"""

import json
import subprocess
import time
from pathlib import Path

import pytest
from helpers import RLVR_TRAIN, train_env


def _run(args: list[str], cwd: Path, cache: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = train_env(cache, WANDB_MODE="disabled")
    env.pop("RLVR_DATA_DIR", None)
    started = time.monotonic()
    proc = subprocess.run(
        [str(RLVR_TRAIN), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    return proc, time.monotonic() - started


def _last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


@pytest.fixture
def dirs(tmp_path):
    cache, work = tmp_path / "cache", tmp_path / "work"
    cache.mkdir()
    work.mkdir()
    return work, cache


def test_bad_config_value_exits_2_before_model_build(dirs):
    work, cache = dirs
    proc, seconds = _run(["algo.clip.eps_high=0.1", f"trainer.output_dir={work / 'run'}"], work, cache)
    assert proc.returncode == 2, proc.stderr
    assert _last_line(proc.stderr).startswith(
        "rlvr-train: error: algo.clip.eps_high: must be >= algo.clip.eps_low"
    )
    assert "Traceback" not in proc.stderr
    assert list(cache.iterdir()) == []  # no tiny-addition/ build started
    assert seconds < 60  # the model build alone takes minutes


def test_bad_data_row_exits_2_before_model_load(dirs):
    work, cache = dirs
    empty_model = work / "empty-model"  # loading a tokenizer/model from here would fail differently
    empty_model.mkdir()
    rows = [{"question": "1+1", "answer": "2"}, {"question": "2+2"}, {"question": "3+3", "answer": "6"}]
    (work / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = [
        "model.builtin=null",
        f"model.path={empty_model}",
        "data.train_files=[bad.jsonl]",
        "data.eval_files=[]",
        "eval.every=0",  # no held-out split: evaluation off, or validate stops on data.eval_files first
        f"trainer.output_dir={work / 'run'}",
    ]
    proc, _ = _run(args, work, cache)
    assert proc.returncode == 2, proc.stderr
    last = _last_line(proc.stderr)
    assert last.startswith("rlvr-train: error: bad.jsonl: row 2: field 'answer'"), last
    assert "Traceback" not in proc.stderr
    assert list(cache.iterdir()) == []


def test_a_failing_sweep_job_is_recorded_and_the_sweep_goes_on(dirs):
    work, cache = dirs
    sweep = work / "sweep"
    # both jobs fail validation (eps_high below eps_low = 0.3), so no model work: the second still runs
    args = ["-m", "algo.clip.eps_low=0.3", "algo.clip.eps_high=0.1,0.2", f"hydra.sweep.dir={sweep}"]
    proc, _ = _run(args, work, cache)
    assert proc.returncode == 1, proc.stderr
    assert (
        "Error executing job with overrides: ['algo.clip.eps_low=0.3', 'algo.clip.eps_high=0.1']"
        in proc.stderr
    )
    for num in (0, 1):
        assert (
            f"rlvr-train: error: sweep job {num}: algo.clip.eps_high: must be >= algo.clip.eps_low"
            in proc.stderr
        )
    jobs = sorted(sweep.iterdir())
    assert [p.name for p in jobs] == [
        "0_algo.clip.eps_high=0.1,algo.clip.eps_low=0.3",
        "1_algo.clip.eps_high=0.2,algo.clip.eps_low=0.3",
        "multirun.yaml",
    ]
    for job in jobs[:2]:
        assert "ConfigError: algo.clip.eps_high" in (job / "error.txt").read_text()
    # refused by validation, each job still keeps its overrides: rlvr-report labels it by its swept value
    assert (jobs[0] / ".hydra" / "overrides.yaml").read_text().splitlines() == [
        "- algo.clip.eps_low=0.3",
        "- algo.clip.eps_high=0.1",
    ]
    from rlvr.report.runs import load_runs, swept_keys

    runs = load_runs([sweep])
    assert [r.overrides.get("algo.clip.eps_high") for r in runs] == ["0.1", "0.2"]
    assert swept_keys(runs) == ["algo.clip.eps_high"]
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize(
    "override", ["algo.clip.eps_hihg=0.3", "+algo.clip.eps_hihg=0.3", "++algo.clip.eps_hihg=0.3"]
)
def test_a_mistyped_key_is_refused_even_with_plus(dirs, override):
    """Hydra advises `+` for a key it does not know, and with `+` it would add the typo and train with eps_high
    unchanged: both forms stop with one line naming the key and the nearest real one."""
    work, cache = dirs
    proc, seconds = _run([override, f"trainer.output_dir={work / 'run'}"], work, cache)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["rlvr-train: error: algo.clip.eps_hihg: no such key; did you mean algo.clip.eps_high?"]
    assert not (work / "run").exists()
    assert list(cache.iterdir()) == []
    assert seconds < 60


def test_accelerate_configs_are_not_a_config_group(dirs):
    work, cache = dirs
    proc, _ = _run(["accelerate=ddp"], work, cache)
    assert proc.returncode == 2, proc.stderr
    assert _last_line(proc.stderr).startswith(
        "rlvr-train: error: accelerate: configs/accelerate/ holds `accelerate launch --config_file` files"
    )
    helped = subprocess.run([str(RLVR_TRAIN), "--help"], capture_output=True, text=True, timeout=120)
    assert "accelerate: not a config group" in helped.stdout, helped.stdout


def test_a_job_without_overrides_keeps_the_swept_column(tmp_path):
    """A sweep from before failed jobs wrote their overrides: the others' swept values still label the table."""
    from rlvr.report.runs import load_runs, swept_keys, value_of

    for name, eps in (("0_a", "0.2"), ("1_b", "0.28")):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(f"- algo.clip.eps_high={eps}\n")
    (tmp_path / "2_c").mkdir()
    (tmp_path / "2_c" / "error.txt").write_text("Traceback ...\n")
    runs = load_runs([tmp_path])
    assert swept_keys(runs) == ["algo.clip.eps_high"]
    assert [value_of(r, "algo.clip.eps_high") for r in runs] == ["0.2", "0.28", "n/a"]
