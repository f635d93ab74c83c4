"""Run accelerate's real FSDP2 path on CPU, for tests: `accelerate launch --config_file
configs/accelerate/fsdp2.yaml ... tests/dist/fsdp2_cpu.py TRAIN_ARGS` is `rlvr-train TRAIN_ARGS` sharded by FSDP2.

accelerate enables FSDP only on accelerator devices: on CPU `Accelerator()` reads the launcher's FSDP settings
(ACCELERATE_USE_FSDP, FSDP_*) but runs as plain gloo data parallelism. `fsdp2_on_cpu` makes every Accelerator
created afterwards FSDP with exactly those settings, so `prepare` takes accelerate's own FSDP2 path
(`fully_shard` of each decoder layer and the root, its optimizer remapping, its state-dict loading).
"""

from __future__ import annotations

import os


def fsdp2_on_cpu() -> None:
    from accelerate import Accelerator
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    assert os.environ.get("ACCELERATE_USE_FSDP") == "true", "launch with configs/accelerate/fsdp2.yaml"
    init = Accelerator.__init__

    def fsdp_init(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        if self.state.distributed_type == DistributedType.MULTI_CPU:
            self.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # from the launcher's FSDP_* variables
            self.state.distributed_type = DistributedType.FSDP
            # as accelerate records it: every later AcceleratorState() copies the type from PartialState
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    Accelerator.__init__ = fsdp_init


if __name__ == "__main__":
    from rlvr.train import main

    fsdp2_on_cpu()
    main()
