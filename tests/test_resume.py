"""Restarts leave no trace: exact resume, SIGTERM, and SIGKILL in the middle of writing a checkpoint."""

import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import RLVR_TRAIN, metrics_lines, run_train, train_cmd, train_env
from safetensors.torch import load_file

# a reference reset at step 2 happens before the restart at step 3, so the restored reference must be the reset one
COMMON = [
    "algo.kl.coef=0.05",
    "algo.kl.reset_every=2",
    "eval.every=0",
    "trainer.progress_bar=false",
    "trainer.samples_every=0",
]
VOLATILE = ("timing/", "throughput/")  # wall-clock numbers differ between any two runs


def _run(cache, out, *overrides):
    return run_train(cache, out, *COMMON, *overrides)


def _stable(line):
    return {k: v for k, v in line.items() if not k.startswith(VOLATILE)}


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_resume_is_exact(tiny_cache, tmp_path, backend):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _run(tiny_cache, straight, f"rollout.backend={backend}", "trainer.total_steps=6", "trainer.save_every=3")
    _run(tiny_cache, resumed, f"rollout.backend={backend}", "trainer.total_steps=3", "trainer.save_every=3")
    proc = _run(
        tiny_cache, resumed, f"rollout.backend={backend}", "trainer.total_steps=6", "trainer.save_every=3"
    )
    assert "resumed from" in proc.stderr + proc.stdout

    a, b = metrics_lines(straight), metrics_lines(resumed)
    assert [d["step"] for d in b] == [1, 2, 3, 4, 5, 6]
    assert [d["ref/resets"] for d in b] == [0, 1, 1, 2, 2, 3]
    assert [_stable(d) for d in a[3:]] == [_stable(d) for d in b[3:]]

    wa = load_file(straight / "checkpoints" / "step_000006" / "policy" / "model.safetensors")
    wb = load_file(resumed / "checkpoints" / "step_000006" / "policy" / "model.safetensors")
    for name in wa:
        scale = wa[name].abs().max().clamp(min=1e-12)
        assert ((wa[name] - wb[name]).abs().max() / scale) < 1e-6, name


def _partial_checkpoint(ckpts: Path) -> bool:
    """A checkpoint is being written (.tmp-step_*) after at least one complete one exists."""
    in_write = ckpts.is_dir() and any(p.name.startswith(".tmp-step_") for p in ckpts.iterdir())
    return in_write and (ckpts / "latest").exists()


def _wait_for(predicate, timeout_s, proc):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.001)
    return False


def test_sigterm_saves_the_finished_step_and_exits_0(tiny_cache, tmp_path):
    out = tmp_path / "term"
    cmd = train_cmd(out, *COMMON, "rollout.backend=hf", "trainer.total_steps=1000", "trainer.save_every=0")
    with open(tmp_path / "stderr.txt", "w") as err:  # a file, not a pipe nobody reads while it runs
        proc = subprocess.Popen(cmd, env=train_env(tiny_cache), stdout=subprocess.DEVNULL, stderr=err)
        metrics = out / "metrics.jsonl"
        assert _wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 2, 300, proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    assert proc.returncode == 0, (tmp_path / "stderr.txt").read_text()[-2000:]
    last = metrics_lines(out)[-1]["step"]
    assert 2 <= last < 1000
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step_{last:06d}"


def test_sigkill_while_writing_a_checkpoint_resumes_from_the_previous_one(tiny_cache, tmp_path):
    out = tmp_path / "kill"
    ckpts = out / "checkpoints"
    for _attempt in range(5):  # the write takes milliseconds: retry if the kill lands outside it
        proc = subprocess.Popen(
            train_cmd(out, *COMMON, "rollout.backend=hf", "trainer.total_steps=1000", "trainer.save_every=1"),
            env=train_env(tiny_cache),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        caught = _wait_for(lambda: _partial_checkpoint(ckpts), 300, proc)
        proc.kill()
        proc.wait()
        if caught and any(p.name.startswith(".tmp-") for p in ckpts.iterdir()):
            break
    else:
        pytest.fail("never caught the trainer inside a checkpoint write")
    complete = (ckpts / "latest").read_text().strip()
    tmp_dirs = [p.name for p in ckpts.iterdir() if p.name.startswith(".tmp-")]
    assert tmp_dirs and all(
        int(t.removeprefix(".tmp-step_")) > int(complete.removeprefix("step_")) for t in tmp_dirs
    )

    proc = _run(
        tiny_cache,
        out,
        "rollout.backend=hf",
        f"trainer.total_steps={int(complete.removeprefix('step_')) + 1}",
    )
    assert f"resumed from {ckpts / complete}" in proc.stderr + proc.stdout


def test_sigterm_in_a_sweep_saves_the_job_and_ends_the_sweep(tiny_cache, tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [str(RLVR_TRAIN), "-m", "experiment=quickstart", "rollout.backend=hf", *COMMON]
    cmd += [
        "trainer.total_steps=1000",
        "trainer.save_every=0",
        "trainer.seed=1,2",
        f"hydra.sweep.dir={sweep}",
    ]
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen(cmd, env=train_env(tiny_cache), stdout=subprocess.DEVNULL, stderr=err)

        def two_steps_logged():
            logged = list(sweep.glob("0_*/metrics.jsonl"))
            return bool(logged) and logged[0].read_text().count("\n") >= 2

        assert _wait_for(two_steps_logged, 300, proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    assert proc.returncode == 0, (tmp_path / "stderr.txt").read_text()[-2000:]
    (job,) = [p for p in sweep.iterdir() if p.is_dir()]  # the second job never started
    last = metrics_lines(job)[-1]["step"]
    assert (job / "checkpoints" / "latest").read_text().strip() == f"step_{last:06d}"
