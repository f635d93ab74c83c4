"""Never lose a run: one trainer per run dir, a resume that would change the experiment is refused, a finished
run is left alone, a damaged checkpoint is skipped for the newest intact one, a failed save says so in a line."""

import errno
import hashlib
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import metrics_lines, run_train, train_cmd, train_env

from rlvr import checkpoint
from rlvr.checkpoint import CheckpointSaveError, find_resumable, save_checkpoint, verify_checkpoint
from rlvr.run_dir import RunDirBusy, config_changes, hold, write_config
from rlvr.tiny_model import build_model, build_tokenizer

HF = ("rollout=hf", "eval.every=0", "trainer.samples_every=0")


@pytest.fixture(scope="module")
def tiny():
    tok = build_tokenizer()
    return build_model(len(tok), tok.eos_token_id, tok.pad_token_id, seed=0), tok


def _files(run) -> dict[str, str]:
    """Every file of a run dir with its sha256 (the lock file aside: its holder line is the lock's business)."""
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.name != ".rlvr.lock"
    }


# ---- the lock -----------------------------------------------------------------------------------------------


def test_a_second_holder_is_refused_with_the_first_ones_pid_and_host(tmp_path):
    with hold(tmp_path / "run"):
        busy = rf"trainer.output_dir: .*run is in use by another rlvr-train \(pid {os.getpid()} on "
        with pytest.raises(RunDirBusy, match=busy), hold(tmp_path / "run"):
            pass
    with hold(tmp_path / "run"):  # released on exit
        pass


def test_a_killed_holder_does_not_block_a_restart(tmp_path):
    run = tmp_path / "run"
    code = f"from rlvr.run_dir import hold; import pathlib, time\nwith hold(pathlib.Path({str(run)!r})):\n print('held', flush=True); time.sleep(60)"  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    with pytest.raises(RunDirBusy, match=f"pid {proc.pid} on"), hold(run):
        pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with hold(run):  # the kernel released the dead process's lock; its stale line is replaced
        assert f"pid {os.getpid()} on" in (run / ".rlvr.lock").read_text()


# ---- the config of a resume -----------------------------------------------------------------------------------


def test_config_changes_names_the_keys_a_resume_may_not_change():
    saved = {"algo": {"name": "grpo", "clip": {"eps_high": 0.2}}, "trainer": {"total_steps": 10, "seed": 0},
             "eval": {"every": 5}, "model": {"path": "/m"}}  # fmt: skip
    new = {"algo": {"name": "grpo", "clip": {"eps_high": 0.28}}, "trainer": {"total_steps": 20, "seed": 1},
           "eval": {"every": 2}, "model": {"path": "/m"}}  # fmt: skip
    assert config_changes(saved, new) == ["algo.clip.eps_high: 0.2 -> 0.28", "trainer.seed: 0 -> 1"]
    assert config_changes(saved, {**saved, "reward": {"require_boxed": True}}) == [
        "reward.require_boxed: <unset> -> True"
    ]


def test_a_key_added_after_the_run_started_is_no_change_at_its_default():
    """A run saved before rlvr had reward.max_abs resumes with it at its default, not at another value."""
    saved = {"reward": {"timeout_s": 5}}
    defaults = {"reward": {"timeout_s": 5, "max_abs": 1e6, "require_boxed": False}}
    at_default = {"reward": {"timeout_s": 5, "max_abs": 1e6, "require_boxed": False}}
    assert config_changes(saved, at_default, defaults) == []
    assert config_changes(saved, {"reward": {"timeout_s": 5, "max_abs": 10.0}}, defaults) == [
        "reward.max_abs: <unset> -> 10.0"
    ]


def test_write_config_keeps_the_replaced_config_in_the_history(tmp_path):
    write_config(tmp_path, {"a": 1}, 0)
    first = (tmp_path / "config.yaml").read_text()
    write_config(tmp_path, {"a": 1}, 5)  # the same config: nothing written
    assert not (tmp_path / "config_history").exists()
    write_config(tmp_path, {"a": 2}, 5)
    write_config(tmp_path, {"a": 3}, 5)
    assert (tmp_path / "config_history" / "step_000005.yaml").read_text() == first
    assert (tmp_path / "config_history" / "step_000005.1.yaml").read_text() == "a: 2\n"
    assert (tmp_path / "config.yaml").read_text() == "a: 3\n"


# ---- checkpoints --------------------------------------------------------------------------------------------


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "truncated policy/model.safetensors": ("policy/model.safetensors", _truncate, "bytes, .* were written"),
    "truncated state.pt": ("state.pt", _truncate, "bytes, .* were written"),
    "deleted state.pt": ("state.pt", lambda p: p.unlink(), "is missing"),
    "deleted policy/model.safetensors": ("policy/model.safetensors", lambda p: p.unlink(), "is missing"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_checkpoint_is_named_and_the_newest_intact_one_found(tmp_path, tiny, case):
    model, tok = tiny
    for step in (1, 2):
        save_checkpoint(tmp_path, step, model, tok, None, {"step": step}, keep_last=3)
    root = tmp_path / "checkpoints"
    name, damage, problem = DAMAGE[case]
    assert verify_checkpoint(root / "step_000002") is None
    damage(root / "step_000002" / name)
    found = verify_checkpoint(root / "step_000002")
    assert found is not None and str(root / "step_000002" / name) in found
    assert re.search(problem, found)
    assert find_resumable(tmp_path) == (root / "step_000001", [(root / "step_000002", found)])


def test_a_changed_byte_fails_the_checksum(tmp_path, tiny):
    model, tok = tiny
    final = save_checkpoint(tmp_path, 1, model, tok, None, {"step": 1}, keep_last=1)
    data = bytearray((final / "state.pt").read_bytes())
    data[-10] ^= 0xFF
    (final / "state.pt").write_bytes(bytes(data))
    assert "does not match its sha256" in verify_checkpoint(final)


def test_a_failed_save_says_why_in_one_line_and_leaves_the_previous_checkpoint(tmp_path, tiny, monkeypatch):
    model, tok = tiny
    save_checkpoint(tmp_path, 1, model, tok, None, {"step": 1}, keep_last=2)
    before = _files(tmp_path)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointSaveError) as e:
        save_checkpoint(tmp_path, 2, model, tok, None, {"step": 2}, keep_last=2)
    message = str(e.value)
    assert "\n" not in message and "could not write checkpoint step_000002" in message
    assert "No space left on device" in message and "step_000001) is intact" in message
    assert _files(tmp_path) == before  # no .tmp-step_000002 left, latest untouched
    assert checkpoint.find_latest(tmp_path).name == "step_000001"


# ---- as a user meets it: the real trainer ---------------------------------------------------------------------


def test_a_second_trainer_on_a_live_run_dir_exits_at_once(tiny_cache, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(
        train_cmd(out, *HF, "trainer.total_steps=500"), env=train_env(tiny_cache), cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (out / "metrics.jsonl").is_file() or not metrics_lines(out):
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.5)
        written = {k: v for k, v in _files(out).items() if k in ("config.yaml", ".hydra/overrides.yaml")}
        started = time.monotonic()
        second = run_train(tiny_cache, out, *HF, "trainer.total_steps=500", check=False)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"is in use by another rlvr-train (pid {first.pid} on " in second.stderr
        assert time.monotonic() - started < 60  # before any model loads
        assert {k: v for k, v in _files(out).items() if k in written} == written
        assert not (out / "error.txt").exists()
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=300)
    assert first.returncode == 0


def test_a_finished_run_is_left_alone_and_resumes_past_a_damaged_checkpoint(tiny_cache, tmp_path):
    """Another experiment on a finished run is refused, naming the changed keys; total_steps at or below the
    finished step trains nothing; neither changes a byte of the run. Then the newest checkpoint is damaged: a
    resume that says it changes the config falls back to the intact one before it, and the config it replaces
    is kept in the history under that step."""
    out = tmp_path / "run"
    run_train(tiny_cache, out, *HF, "trainer.total_steps=4", "trainer.save_every=2", "trainer.keep_last=3")
    before = _files(out)
    other = run_train(tiny_cache, out, *HF, "algo=grpo", "trainer.total_steps=6", check=False)
    assert other.returncode == 2, other.stderr[-2000:]
    assert "holds a run of another experiment" in other.stderr and "algo.name: dapo -> grpo" in other.stderr
    done = run_train(tiny_cache, out, *HF, "trainer.total_steps=4", check=False)
    said = done.stdout + done.stderr
    assert done.returncode == 0 and "finished at step 4: trainer.total_steps=4 leaves nothing" in said
    assert _files(out) == before
    saved = (out / "config.yaml").read_bytes()
    _truncate(out / "checkpoints" / "step_000004" / "policy" / "model.safetensors")
    proc = run_train(
        tiny_cache,
        out,
        *HF,
        "algo.clip.eps_high=0.3",
        "trainer.total_steps=5",
        "trainer.keep_last=3",
        "trainer.allow_config_change=true",
    )
    said = proc.stdout + proc.stderr
    assert "cannot resume from" in said and "step_000004/policy/model.safetensors has" in said
    assert "step_000002 at step 2" in (out / "train.log").read_text()
    assert [m["step"] for m in metrics_lines(out)] == [1, 2, 3, 4, 5]
    assert (out / "config_history" / "step_000002.yaml").read_bytes() == saved
    assert b"eps_high: 0.3" in (out / "config.yaml").read_bytes()
