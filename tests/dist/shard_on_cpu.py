"""accelerate's sharded paths on CPU, for tests: `accelerate launch --config_file configs/accelerate/fsdp2.yaml
(or zero3.yaml) ... tests/dist/shard_on_cpu.py TRAIN_ARGS` is `rlvr-train TRAIN_ARGS` sharded by FSDP2 (or
partitioned by DeepSpeed ZeRO-3) on gloo processes.

- FSDP2: accelerate enables FSDP only on accelerator devices: on CPU `Accelerator()` reads the launcher's FSDP
  settings (ACCELERATE_USE_FSDP, FSDP_*) but runs as plain gloo data parallelism. `fsdp2_on_cpu` makes every
  Accelerator created afterwards FSDP with exactly those settings, so `prepare` takes accelerate's own FSDP2
  path (`fully_shard` of each decoder layer and the root, its optimizer remapping, its state-dict loading).
- ZeRO-3 runs on CPU as it is (DeepSpeed's CPU accelerator, gloo), but keeps every parameter smaller than
  `stage3_param_persistence_threshold` (100k elements) whole on each rank: all of the tiny model's.
  `zero3_partition_all` sets it to 0, so that every parameter is partitioned (and leaves out DeepSpeed's
  CPU shared-memory all-reduce, a C++ op built on first use: gloo does those sums).
"""

from __future__ import annotations

import os


def _after_accelerator_init(change) -> None:
    """Run change(accelerator) at the end of every `Accelerator.__init__` from now on."""
    from accelerate import Accelerator

    init = Accelerator.__init__

    def patched(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        change(self)

    Accelerator.__init__ = patched


def fsdp2_on_cpu() -> None:
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    assert os.environ.get("ACCELERATE_USE_FSDP") == "true", "launch with configs/accelerate/fsdp2.yaml"

    def change(accelerator) -> None:
        if accelerator.state.distributed_type == DistributedType.MULTI_CPU:
            accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables
            accelerator.state.distributed_type = DistributedType.FSDP
            # as accelerate records it: every later AcceleratorState() copies the type from PartialState
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    _after_accelerator_init(change)


def zero3_partition_all() -> None:
    assert os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true", "launch with configs/accelerate/zero3.yaml"
    import importlib

    # DeepSpeed's CPU shared-memory all-reduce is a C++ op that gcc builds on its first use on a machine (30 s
    # on CI's fresh one); without it the same sums go through gloo, as every other collective here does. (The
    # module by import_module: the attribute deepspeed.comm.torch is torch itself, re-exported.)
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None

    def change(accelerator) -> None:
        config = accelerator.state.deepspeed_plugin.deepspeed_config
        config.setdefault("zero_optimization", {})["stage3_param_persistence_threshold"] = 0

    _after_accelerator_init(change)


def shard_on_cpu() -> None:
    """The change for the launcher's config: FSDP2 or ZeRO-3."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
        zero3_partition_all()
    else:
        fsdp2_on_cpu()


if __name__ == "__main__":
    from rlvr.train import main

    shard_on_cpu()
    main()
