"""One trainer per run directory, and a run's config that is never silently replaced.

- `hold(out)`: an exclusive `fcntl` lock on `out/.rlvr.lock`, held for the whole run by rank 0. A second
  `rlvr-train` on the same directory fails at once with RunDirBusy, naming the holder's pid, host and start.
  The kernel drops the lock when its process dies, however it dies: a killed run never blocks its restart.
- `config_changes(saved, new)`: the keys whose values differ between a run's saved config and a resume's, less
  those a resume may change (RESUMABLE: steps, saving, logging, evaluation, throughput). A resume with any
  other change is refused unless it says so (trainer.allow_config_change, or an explicit trainer.resume).
- `write_config(out, config, step)`: config.yaml is the config of the latest start; a start that changes it
  first keeps the previous one as `config_history/step_NNNNNN.yaml` (the step at which it stopped applying).
"""

from __future__ import annotations

import datetime
import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from rlvr.config import RLVRConfig
from rlvr.errors import ConfigError, RunDirBusy

LOCK = ".rlvr.lock"
HISTORY = "config_history"
# what a resume may change: when to stop, save, log and evaluate, which engine samples and how fast the work
# runs; never what is learned (algorithm, optimizer, data, model, reward, sampling parameters, seed)
RESUMABLE = (
    "trainer.total_steps",
    "trainer.save_every",
    "trainer.keep_last",
    "trainer.samples_every",
    "trainer.progress_bar",
    "trainer.resume",
    "trainer.output_dir",
    "trainer.allow_config_change",
    "trainer.checkpoint_",
    "trainer.max_nonfinite_steps",
    "trainer.no_signal_warn_steps",
    "trainer.no_signal_max_steps",
    "logger.",
    "eval.",
    "monitor.",
    "learner.",
    "reward.num_workers",
    "reward.timeout_s",
    "reward.timeout_skip_after",
    "reward.fail_warn_steps",
    "reward.fail_max_steps",
    "model.attn_implementation",
    "model.gradient_checkpointing",
    "rollout.backend",
    "rollout.mode",
    "rollout.dtype",
    "rollout.tensor_parallel_size",
    "rollout.max_model_len",
    "rollout.gpu_memory_utilization",
    "rollout.enable_sleep_mode",
    "rollout.enable_prefix_caching",
    "rollout.server_",
)


@contextmanager
def hold(out: Path) -> Iterator[None]:
    """Hold `out`'s lock for the duration (creating `out`); RunDirBusy if another process holds it."""
    out.mkdir(parents=True, exist_ok=True)
    f = (out / LOCK).open("a+", encoding="utf-8")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "a process that has not written its name yet"
        f.close()
        raise RunDirBusy(
            "trainer.output_dir", f"{out} is in use by another rlvr-train ({holder}); wait for it or stop it"
        ) from None
    try:
        f.seek(0)
        f.truncate()
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n")
        f.flush()
        yield
    finally:
        f.close()  # releases the lock


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for k, v in tree.items():
            flat.update(_flat(v, f"{prefix}{k}."))
        return flat or {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def config_changes(saved: dict, new: dict, defaults: dict | None = None) -> list[str]:
    """`key: old -> new` for each key that differs and that a resume may not change (see RESUMABLE). A key the
    saved config lacks (a run started before rlvr had it) is no change while the new value is its default in
    `defaults` (the schema's): a key is added with the default that keeps the old behaviour."""
    before, after = _flat(saved), _flat(new)
    default = _flat(defaults or {})
    changed = []
    for key in sorted(before.keys() | after.keys()):
        if key.startswith(RESUMABLE) or before.get(key, "<unset>") == after.get(key, "<unset>"):
            continue
        if key not in before and key in default and after.get(key) == default[key]:
            continue
        changed.append(f"{key}: {before.get(key, '<unset>')} -> {after.get(key, '<unset>')}")
    return changed


def check_resume_config(out: Path, new: dict, explicit: bool) -> None:
    """Refuse a resume whose config changes the experiment saved in out/config.yaml, naming each key, unless
    `explicit` (trainer.resume was a path, or trainer.allow_config_change)."""
    path = out / "config.yaml"
    if explicit or not path.is_file():
        return
    defaults = OmegaConf.to_container(OmegaConf.structured(RLVRConfig))
    changes = config_changes(OmegaConf.to_container(OmegaConf.load(path)), new, defaults)
    if changes:
        raise ConfigError(
            "trainer.output_dir",
            f"{out} holds a run of another experiment; resuming it would change {'; '.join(changes)}. Choose "
            "another trainer.output_dir, or resume with these changes on purpose: trainer.allow_config_change=true",
        )


def write_overrides(out: Path, overrides: list[str]) -> None:
    """out/.hydra/overrides.yaml: the command line's overrides, as Hydra writes them (rlvr-report reads them)."""
    (out / ".hydra").mkdir(exist_ok=True)
    (out / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(list(overrides))))


def write_config(out: Path, config: dict, step: int) -> None:
    """out/config.yaml := config; a different previous one is kept as config_history/step_NNNNNN.yaml."""
    path = out / "config.yaml"
    text = OmegaConf.to_yaml(OmegaConf.create(config))
    if path.is_file():
        old = path.read_text(encoding="utf-8")
        if old == text:
            return
        kept = out / HISTORY / f"step_{step:06d}.yaml"
        n = 1
        while kept.exists():  # several starts at the same step
            kept = out / HISTORY / f"step_{step:06d}.{n}.yaml"
            n += 1
        kept.parent.mkdir(exist_ok=True)
        kept.write_text(old, encoding="utf-8")
    tmp = path.with_name(".config.yaml.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
