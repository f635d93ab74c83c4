"""The trainer's config (the `trainer` section: the run's length, seed, checkpoints and guards) and its validator.
Re-exported by rlvr.config, whose `validate` calls `check_trainer`; whether a trainer.resume path exists is
checked there with the other paths.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlvr.config_rules import one_of, require

CHECKPOINT_FORMATS = ("full", "sharded")


@dataclass
class TrainerConfig:
    output_dir: str = "runs/default"
    total_steps: int = 100
    prompts_per_step: int = 16  # B prompts, each sampled G times
    seed: int = 0
    save_every: int = 50
    keep_last: int = 2
    resume: str = "auto"  # auto | never | path to a checkpoint dir
    # full: rank 0 gathers the whole weights and Adam state and writes policy/ (Hugging Face) + state.pt; sharded:
    # every rank writes its own shard through torch.distributed.checkpoint (rlvr/sharded_checkpoint.py). Either
    # resumes at any world size; a resume may switch between them
    checkpoint_format: str = "full"
    # sharded only: write the shards on a background thread while training goes on (the step's state copied to
    # host memory first); the checkpoint becomes `latest` once every rank's shard is on disk
    checkpoint_async: bool = False
    # resume although the config changes the experiment saved in the run dir (algorithm, data, model, seed...):
    # refused otherwise, naming each changed key (rlvr/run_dir.py; an explicit trainer.resume path allows it too)
    allow_config_change: bool = False
    samples_every: int = 10  # write samples/step_NNNNNN.jsonl every N steps (0 = never)
    progress_bar: bool = True
    # the divergence guard (rlvr/guard.py): stop (exit 1) after this many steps in a row whose update had a
    # non-finite loss or gradient norm (each such optimizer step is skipped, counted in learner/nonfinite_steps)
    max_nonfinite_steps: int = 3
    # steps in a row with no learning signal (every sampled group one reward: groups/zero_std_frac 1) before a
    # warning, and before the run stops with exit 1 (null = never)
    no_signal_warn_steps: int | None = 5
    no_signal_max_steps: int | None = 20


def check_trainer(t: TrainerConfig) -> None:
    """trainer's values; whether a trainer.resume path exists is rlvr.config's `_check_paths`'s."""
    require(t.total_steps >= 1, "trainer.total_steps", f"must be >= 1, got {t.total_steps}")
    require(t.prompts_per_step >= 1, "trainer.prompts_per_step", f"must be >= 1, got {t.prompts_per_step}")
    require(t.save_every >= 0, "trainer.save_every", "must be >= 0 (0 = only at the end)")
    require(t.keep_last >= 1, "trainer.keep_last", f"must be >= 1, got {t.keep_last}")
    one_of(t.checkpoint_format, CHECKPOINT_FORMATS, "trainer.checkpoint_format")
    require(
        not t.checkpoint_async or t.checkpoint_format == "sharded",
        "trainer.checkpoint_async",
        "needs trainer.checkpoint_format=sharded (a full checkpoint is gathered onto rank 0 and written there, "
        "synchronously)",
    )
    require(
        t.max_nonfinite_steps >= 1,
        "trainer.max_nonfinite_steps",
        f"must be >= 1, got {t.max_nonfinite_steps}",
    )
    for key in ("no_signal_warn_steps", "no_signal_max_steps"):
        n = getattr(t, key)
        require(n is None or n >= 1, f"trainer.{key}", f"must be >= 1 or null, got {n}")
