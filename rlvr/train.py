"""`rlvr-train` / `python -m rlvr.train`: the Hydra entry point.

rlvr-train                                   # experiment=quickstart, the embedded default
rlvr-train experiment=qwen_math_dapo data.train_files=[/data/math/train.parquet]
rlvr-train -m algo.clip.eps_high=0.2,0.28    # a sweep, one run dir per combination
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rlvr import checkpoint, run_dir
from rlvr import distributed as dist
from rlvr import overrides as overrides_mod
from rlvr.config import RLVRConfig, register_configs, validate
from rlvr.errors import ERROR_FILENAME, CheckpointSaveError, ConfigError, DataError, RunDirBusy, RunDiverged

log = logging.getLogger("rlvr")
# configs/ sits beside the package in the repository (installs are editable: `pip install -e .`)
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_main(dict_cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    if sweep:  # each sweep job writes into its own Hydra job dir: hydra.sweep.dir/hydra.sweep.subdir
        if any(o.lstrip("+").split("=", 1)[0] == "trainer.output_dir" for o in hydra_cfg.overrides.task):
            log.warning(
                "trainer.output_dir is ignored in a sweep: choose the sweep's directory with hydra.sweep.dir"
            )
        dict_cfg.trainer.output_dir = hydra_cfg.runtime.output_dir
    out = Path(dict_cfg.trainer.output_dir)
    try:
        stopped = _train(dict_cfg, list(hydra_cfg.overrides.task))
    except RunDirBusy as e:  # the run dir is another trainer's: write nothing into it
        if not sweep:
            print(f"rlvr-train: error: {e}", file=sys.stderr)
            sys.exit(2)
        raise
    except (ConfigError, DataError, RunDiverged, CheckpointSaveError) as e:
        # a bad input exits 2; a run that cannot go on (divergence, a checkpoint that cannot be written) 1
        status = 2 if isinstance(e, (ConfigError, DataError)) else 1
        if not sweep:
            if status == 1:
                _record_failure(out, None)
            print(f"rlvr-train: error: {e}", file=sys.stderr)
            sys.exit(status)
        _record_failure(out, f"sweep job {hydra_cfg.job.num}: {e}", list(hydra_cfg.overrides.task))
        raise  # Hydra goes on with the next job, and at the end exits with status 1 naming the first failure
    except Exception as e:
        _record_failure(out, f"sweep job {hydra_cfg.job.num} failed: {e!r}" if sweep else None)
        raise
    if stopped and sweep:
        # A signal means "stop", not "skip to the next job": end the sweep as a single run ends (status 0).
        log.warning("stopped by a signal: the sweep ends here; run the same command again to resume it")
        sys.exit(0)


def _train(dict_cfg: DictConfig, overrides: list[str]) -> bool:
    """Train one run; returns whether a signal (SIGTERM/SIGINT) stopped it before trainer.total_steps.

    Rank 0 holds the run dir's lock (run_dir.hold) from before it reads anything there until the run ends,
    and only then writes into it: train.log, the overrides, config.yaml (its history kept)."""
    from rlvr.trainer import Trainer, prepare

    cfg: RLVRConfig = OmegaConf.to_object(dict_cfg)
    out = Path(cfg.trainer.output_dir)
    # under accelerate launch/torchrun: rank 0 holds the lock and writes the run dir
    main_rank = int(os.environ.get("RANK", "0")) == 0
    with run_dir.hold(out) if main_rank else contextlib.nullcontext(), _held_log(main_rank) as keep_log:
        prep = prepare(cfg, out)
        step = checkpoint.checkpoint_step(prep.resume_from) if prep.resume_from else 0
        config = OmegaConf.to_container(dict_cfg, resolve=True)
        if main_rank and prep.resume_from:
            explicit = cfg.trainer.resume != "auto" or cfg.trainer.allow_config_change
            run_dir.check_resume_config(out, config, explicit)
        if step >= cfg.trainer.total_steps:
            log.info(
                "%s finished at step %d: trainer.total_steps=%d leaves nothing to train; raise it to go on",
                out, step, cfg.trainer.total_steps,
            )  # fmt: skip
            return False
        if main_rank:  # from here on this start is the run's: it writes into the run dir
            (out / ERROR_FILENAME).unlink(missing_ok=True)
            keep_log(out / "train.log")
            run_dir.write_overrides(out, overrides)
            run_dir.write_config(out, config, step)
        trainer = Trainer(prep)
        trainer.run()
        return trainer.stop_requested


@contextlib.contextmanager
def _held_log(enabled: bool = True):
    """Hold the log records of a start until it is the run's (`keep(path)`: they go into the run's train.log,
    appended to by each start, and so does everything after); a start that is refused writes nothing there.
    Hydra writes no log file (its hydra.job_logging sends the root logger to the console only). Not enabled
    (ranks other than 0): nothing held, no file."""
    root = logging.getLogger()
    held = logging.handlers.MemoryHandler(capacity=1 << 30, flushLevel=logging.CRITICAL + 1)
    if enabled:
        root.addHandler(held)
    files: list[logging.Handler] = []

    def keep(path: Path) -> None:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        files.append(handler)
        held.setTarget(handler)
        held.flush()
        root.removeHandler(held)
        root.addHandler(handler)

    try:
        yield keep
    finally:  # a sweep's next job logs into its own run dir
        for handler in [held, *files]:
            root.removeHandler(handler)
        held.setTarget(None)
        held.close()
        for handler in files:
            handler.close()


def _record_failure(out: Path, say: str | None, overrides: list[str] | None = None) -> None:
    """error.txt in the run dir (rlvr-report marks the run as failed) and, in a sweep, a line on stderr for
    every failed job: Hydra's message at the end of the sweep names only the first. A sweep job refused
    before it wrote its overrides (a value that fails validation) writes them now: rlvr-report labels every
    job of the sweep by its swept values, the failed one included."""
    try:
        if out.is_dir():
            (out / ERROR_FILENAME).write_text(traceback.format_exc())
            if overrides is not None and not (out / ".hydra" / "overrides.yaml").is_file():
                run_dir.write_overrides(out, overrides)
    except OSError:  # a full disk: the message on stderr is what is left
        pass
    if say is not None:
        print(f"rlvr-train: error: {say} (traceback in {out / ERROR_FILENAME})", file=sys.stderr)


def compose(overrides: list[str], check: bool = True) -> RLVRConfig:
    """The typed config `rlvr-train OVERRIDES` would train with, composed as Hydra composes it, without
    training (the docs test runs every documented command through it): unknown keys refused as rlvr-train
    refuses them, then the schema's types, then `rlvr.config.validate` unless `check` is false."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    overrides_mod.check(overrides, CONFIG_DIR)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        dict_cfg = hydra_compose(config_name="config", overrides=list(overrides))
    cfg: RLVRConfig = OmegaConf.to_object(dict_cfg)
    if check:
        validate(cfg)
    return cfg


def _refuse_unknown_keys(argv: list[str]) -> None:
    """Exit 2 with one line before Hydra runs when an override names a key the schema lacks (even with `+`,
    which Hydra would add in silence)."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(argv)
    try:
        overrides_mod.check(args.overrides, CONFIG_DIR)
    except ConfigError as e:
        print(f"rlvr-train: error: {e}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    register_configs()
    _refuse_unknown_keys(sys.argv[1:])
    _hydra_main()
    dist.exit_launched_rank()  # a finished rank of a multi-process run exits 0, past finalization's aborts


if __name__ == "__main__":
    main()
