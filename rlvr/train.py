"""`rlvr-train` / `python -m rlvr.train`: the Hydra entry point.

rlvr-train                                   # experiment=quickstart, the embedded default
rlvr-train experiment=qwen_math_dapo data.train_files=[/data/math/train.parquet]
rlvr-train -m algo.clip.eps_high=0.2,0.28    # a sweep, one run dir per combination
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rlvr.config import ConfigError, RLVRConfig, register_configs
from rlvr.data.prompts import DataError

log = logging.getLogger("rlvr")
# configs/ sits beside the package in the repository (installs are editable: `pip install -e .`)
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


ERROR_FILENAME = "error.txt"
"""Written into the run dir when the run fails (the traceback); removed when it starts again."""


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
    (out / ERROR_FILENAME).unlink(missing_ok=True)
    try:
        stopped = _train(dict_cfg)
    except (ConfigError, DataError) as e:
        if not sweep:
            print(f"rlvr-train: error: {e}", file=sys.stderr)
            sys.exit(2)
        _record_failure(out, f"sweep job {hydra_cfg.job.num}: {e}")
        raise  # Hydra goes on with the next job, and at the end exits with status 1 naming the first failure
    except Exception as e:
        _record_failure(out, f"sweep job {hydra_cfg.job.num} failed: {e!r}" if sweep else None)
        raise
    if stopped and sweep:
        # A signal means "stop", not "skip to the next job": end the sweep as a single run ends (status 0).
        log.warning("stopped by a signal: the sweep ends here; run the same command again to resume it")
        sys.exit(0)


def _train(dict_cfg: DictConfig) -> bool:
    """Train one run; returns whether a signal (SIGTERM/SIGINT) stopped it before trainer.total_steps."""
    from rlvr.trainer import Trainer, prepare

    cfg: RLVRConfig = OmegaConf.to_object(dict_cfg)
    prep = prepare(cfg, cfg.trainer.output_dir)
    prep.output_dir.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0")) > 0:  # under accelerate launch/torchrun: rank 0 writes the run dir
        for handler in [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]:
            logging.getLogger().removeHandler(handler)  # Hydra's train.log; this rank logs to stderr only
            handler.close()
    else:
        OmegaConf.save(dict_cfg, prep.output_dir / "config.yaml", resolve=True)
    trainer = Trainer(prep)
    trainer.run()
    return trainer.stop_requested


def _record_failure(out: Path, say: str | None) -> None:
    """error.txt in the run dir (rlvr-report marks the run as failed) and, in a sweep, a line on stderr for
    every failed job: Hydra's message at the end of the sweep names only the first."""
    if out.is_dir():
        (out / ERROR_FILENAME).write_text(traceback.format_exc())
    if say is not None:
        print(f"rlvr-train: error: {say} (traceback in {out / ERROR_FILENAME})", file=sys.stderr)


def main() -> None:
    register_configs()
    _hydra_main()


if __name__ == "__main__":
    main()
