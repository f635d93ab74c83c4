"""`rlvr-train` / `python -m rlvr.train`: the Hydra entry point.

rlvr-train                                   # experiment=quickstart, the embedded default
rlvr-train experiment=qwen_math_dapo data.train_files=[/data/math/train.parquet]
rlvr-train -m algo.clip.eps_high=0.2,0.28    # a sweep, one run dir per combination
"""

from __future__ import annotations

import logging
import sys
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


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_main(dict_cfg: DictConfig) -> None:
    from rlvr.trainer import Trainer, prepare

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:  # each sweep job writes into its own Hydra job dir
        dict_cfg.trainer.output_dir = hydra_cfg.runtime.output_dir
    cfg: RLVRConfig = OmegaConf.to_object(dict_cfg)
    try:
        prep = prepare(cfg, cfg.trainer.output_dir)
    except (ConfigError, DataError) as e:
        print(f"rlvr-train: error: {e}", file=sys.stderr)
        sys.exit(2)
    prep.output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(dict_cfg, prep.output_dir / "config.yaml", resolve=True)
    Trainer(prep).run()


def main() -> None:
    register_configs()
    _hydra_main()


if __name__ == "__main__":
    main()
