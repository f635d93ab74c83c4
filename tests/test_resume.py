"""Restarts leave no trace: exact resume, SIGTERM, and SIGKILL in the middle of writing a checkpoint."""

import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import RLVR_TRAIN, metrics_lines, run_train, train_cmd, train_env
from margins import within
from safetensors.torch import load_file

# KL to a reference reset every 3 steps, checkpoints every 2: the restart at step 2 comes before any reset (the
# reference must be the base model again, not the resumed policy), the one at step 4 after the reset at 3 (it must
# be that reset's policy). The quickstart updates in 4 mini-batches a step, with dynamic sampling.
KL = ["algo.kl.coef=0.05", "algo.kl.reset_every=3"]
COMMON = [
    "eval.every=0",
    "trainer.progress_bar=false",
    "trainer.samples_every=0",
]
VOLATILE = ("timing/", "throughput/")  # wall-clock numbers differ between any two runs


def _run(cache, out, *overrides):
    return run_train(cache, out, *COMMON, *overrides)


def _stable(line):
    return {k: v for k, v in line.items() if not k.startswith(VOLATILE)}


def _straight_and_interrupted(cache, tmp_path, overrides, total, every):
    """The same run straight to `total` steps, and stopped and restarted at every checkpoint (`every` steps);
    returns both run dirs, after checking that the interrupted one logged every step once and resumed each time."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _run(cache, straight, *overrides, f"trainer.total_steps={total}", f"trainer.save_every={every}")
    for stop in range(every, total + 1, every):
        proc = _run(cache, resumed, *overrides, f"trainer.total_steps={stop}", f"trainer.save_every={every}")
        assert (stop > every) == ("resumed from" in proc.stderr + proc.stdout)
    assert [d["step"] for d in metrics_lines(resumed)] == list(range(1, total + 1))
    return straight, resumed


def _assert_identical(straight, resumed, step):
    """Every metric (timings aside) of every step, and the final weights within 1e-6 of their largest element."""
    assert [_stable(d) for d in metrics_lines(straight)] == [_stable(d) for d in metrics_lines(resumed)]
    wa = load_file(straight / "checkpoints" / f"step_{step:06d}" / "policy" / "model.safetensors")
    wb = load_file(resumed / "checkpoints" / f"step_{step:06d}" / "policy" / "model.safetensors")
    for name in wa:
        scale = wa[name].abs().max().clamp(min=1e-12)
        within((wa[name] - wb[name]).abs().max() / scale, 1e-6, name)


# the hf run also restricts the policy gradient to forking tokens and leaves dynamic sampling no refill round, so
# that batches come out short (fewer groups, fewer mini-batches)
SHORT_AND_MASKED = ["algo.entropy_mask.top_frac=0.2", "algo.dynamic_sampling.max_rounds=0"]


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_resume_is_exact(tiny_cache, tmp_path, backend):
    """Straight vs restarted at steps 2 (no reset yet) and 4 (after the reset at 3): identical. The matrix's KL
    cases on hf, with the entropy mask, short batches and their mini-batches; on vLLM (whose own state is the
    sampler's) the restart at 2 alone, the reset being the learner's."""
    extra = SHORT_AND_MASKED if backend == "hf" else []
    overrides = [f"rollout.backend={backend}", *KL, *extra]
    total = 6 if backend == "hf" else 4
    straight, resumed = _straight_and_interrupted(tiny_cache, tmp_path, overrides, total=total, every=2)
    lines = metrics_lines(resumed)
    assert [d["ref/resets"] for d in lines] == [0, 0, 1, 1, 1, 2][:total]
    assert all(d["kl/ref"] > 0 for d in lines[1:])  # the policy has left the base model from step 2 on
    if backend == "hf":
        assert any(d["groups/kept"] < 32 for d in lines)  # a short batch ...
        assert any(0 < d["learner/minibatches"] < 4 for d in lines)  # ... split into fewer mini-batches
        assert all(0 < d["learner/pg_token_frac"] < 0.5 for d in lines if d["groups/kept"])
    _assert_identical(straight, resumed, total)


def test_resume_is_exact_with_clip_cov(tiny_cache, tmp_path):
    """Clip-Cov's random draw, per optimizer step under the current policy, comes out the same after a restart
    (hf backend): its generator is checkpointed. (KL-Cov's selection is a top-k of the batch's covariances, no
    state of its own: the resume tests above cover it.)"""
    overrides = ["rollout.backend=hf", "algo=clip_cov"]
    straight, resumed = _straight_and_interrupted(tiny_cache, tmp_path, overrides, total=4, every=2)
    assert all(d["cov/selected_frac"] > 0 for d in metrics_lines(resumed) if d["groups/kept"])
    _assert_identical(straight, resumed, 4)


def test_resume_is_exact_with_the_adaptive_entropy_coefficient(tiny_cache, tmp_path):
    """The adaptive entropy coefficient (algo.entropy_reg.target) is state: a target far above the entropy raises
    it one step per RL step, and a restart at step 2 carries on from the checkpoint's, not from the start (hf)."""
    reg = ["algo.entropy_reg.target=100.0", "algo.entropy_reg.step=0.001", "algo.entropy_reg.max_coef=1.0"]
    straight, resumed = _straight_and_interrupted(tiny_cache, tmp_path, ["rollout.backend=hf", *reg], 4, 2)
    used = [d["entropy_reg/coef"] for d in metrics_lines(resumed)]
    assert used == pytest.approx([0.0, 0.001, 0.002, 0.003], abs=1e-12)
    _assert_identical(straight, resumed, 4)


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
    cmd = train_cmd(
        out, *COMMON, *KL, "rollout.backend=hf", "trainer.total_steps=1000", "trainer.save_every=0"
    )
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
            train_cmd(
                out, *COMMON, *KL, "rollout.backend=hf", "trainer.total_steps=1000", "trainer.save_every=1"
            ),
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
        *KL,
        "rollout.backend=hf",
        f"trainer.total_steps={int(complete.removeprefix('step_')) + 1}",
    )
    assert f"resumed from {ckpts / complete}" in proc.stderr + proc.stdout
    assert (
        f"removed {ckpts / tmp_dirs[0]}: a checkpoint write that a crash interrupted"
        in proc.stderr + proc.stdout
    )


def test_sigterm_in_a_sweep_saves_the_job_and_ends_the_sweep(tiny_cache, tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [str(RLVR_TRAIN), "-m", "experiment=quickstart", "rollout.backend=hf", *COMMON, *KL]
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
