"""A CPU data plane for vLLM's weight transfer: gloo broadcast from the trainer to the rollout server's workers.

vLLM moves a trainer's weights into a separate inference server with its weight-transfer engines
(`vllm.distributed.weight_transfer`): the trainer drives the server's RLHF routes (`/init_weight_transfer_engine`,
`/start_weight_update`, `/update_weights`, `/finish_weight_update`) and, meanwhile, broadcasts the tensors over a
process group of the trainer (rank 0) and the server's workers, which load them with vLLM's layerwise reload.
On GPUs the rollout server uses vLLM's "nccl" backend as it is. vLLM's own data planes all need CUDA (NCCL,
CUDA IPC handles), so on CPU this module registers one more backend, "rlvr_gloo", in vLLM's registries: the
same engines as vLLM's NCCL backend (subclassed: handshake, update metadata, send order, layerwise reload are
vLLM's) with the broadcast over a gloo process group, which vLLM creates (`stateless_init_torch_distributed_
process_group`) outside any global torch.distributed state. Only the few lines that move bytes are ours.

vLLM builds each worker's transfer engine by name from its registry while loading the model, in the worker's
process. The rollout server therefore names `GlooWorkerExtension` as vLLM's `--worker-extension-cls`: vLLM
imports this module in every worker before it loads the model, and importing it registers the backend.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

import torch
from vllm.distributed.weight_transfer import (
    VLLMWeightSyncClient,
    WeightSource,
    WeightTransferEngineFactory,
    WeightTransferTrainerFactory,
)
from vllm.distributed.weight_transfer.base import ParamMeta, TrainerInitInfo, WeightTransferInitInfo
from vllm.distributed.weight_transfer.nccl_engine import (
    NCCLTrainerWeightTransferEngine,
    NCCLWeightTransferEngine,
)

BACKEND = "rlvr_gloo"
TIMEOUT = timedelta(minutes=5)  # how long either side waits for the other in a rendezvous or a broadcast


def _open_group(address: str, port: int, rank: int, world_size: int, listen: socket.socket | None = None):
    """Join the transfer group; the trainer (rank 0) passes `listen`, the socket its rendezvous store serves on.

    The trainer hosts the store on a socket it bound itself rather than through torch's TCP rendezvous: under
    `torchrun`/`accelerate launch` (TORCHELASTIC_USE_AGENT_STORE=True) that rendezvous makes even rank 0 a
    client of a store the launcher's agent is meant to host, so nobody would serve this group's store."""
    from vllm.distributed.utils import stateless_init_torch_distributed_process_group

    return stateless_init_torch_distributed_process_group(
        address, port, rank, world_size, backend="gloo", timeout=TIMEOUT, listen_socket=listen
    )


def _close_group(group) -> None:
    from vllm.distributed.utils import stateless_destroy_torch_distributed_process_group

    stateless_destroy_torch_distributed_process_group(group)


@dataclass(kw_only=True)
class GlooInitInfo(WeightTransferInitInfo):
    """Worker side: where the trainer (rank 0) listens, and the workers' first rank."""

    master_address: str
    master_port: int
    rank_offset: int
    world_size: int


@dataclass
class GlooTrainerInitInfo(TrainerInitInfo):
    """Trainer side (`rank` is the trainer process's own rank; rank 0 sends)."""

    backend: ClassVar[str] = BACKEND

    master_address: str
    master_port: int
    world_size: int  # trainer sender + all inference workers


class GlooWeightTransferEngine(NCCLWeightTransferEngine):
    """Worker side: receives each tensor by broadcast and loads it into the model. The update metadata (names,
    dtypes, shapes) and the layerwise reload around an update are vLLM's NCCL engine's."""

    init_info_cls = GlooInitInfo  # type: ignore[assignment]

    def init_transfer_engine(self, init_info: GlooInitInfo) -> None:  # type: ignore[override]
        self.shutdown()  # a new trainer replaces the previous one
        p = self.parallel_config
        rank = init_info.rank_offset + p.data_parallel_index * p.world_size + p.rank
        self.model_update_group = _open_group(
            init_info.master_address, init_info.master_port, rank, init_info.world_size
        )

    def update_weights(self, update_info: dict[str, Any]) -> None:
        # the base class then synchronizes the accelerator, which fails without one; gloo's broadcast is blocking
        self.receive_weights(self.parse_update_info(update_info))

    def receive_weights(self, update_info) -> None:
        from vllm.model_executor.model_loader.mtp_validation import disable_mtp_completeness_check

        if self.model_update_group is None:
            raise RuntimeError("rlvr_gloo weight transfer: update before init_weight_transfer_engine")
        with disable_mtp_completeness_check():  # as vLLM's NCCL engine: a partial load is expected
            for name, dtype_name, shape in zip(
                update_info.names, update_info.dtype_names, update_info.shapes
            ):
                weight = torch.empty(shape, dtype=getattr(torch, dtype_name))
                self.model_update_group.broadcast(weight, 0).wait()
                self.model.load_weights([(name, weight)])

    def shutdown(self) -> None:
        if self.model_update_group is not None:
            _close_group(self.model_update_group)
            self.model_update_group = None


class GlooTrainerWeightTransferEngine(NCCLTrainerWeightTransferEngine):
    """Trainer side: vLLM's NCCL trainer engine (`send_weights`: start, update concurrently with the broadcast,
    finish) with the group opened and the tensors sent over gloo."""

    init_info_cls = GlooTrainerInitInfo  # type: ignore[assignment]

    @classmethod
    def trainer_init(  # type: ignore[override]
        cls,
        init_info: GlooTrainerInitInfo,
        *,
        client: VLLMWeightSyncClient,
        source: WeightSource | None = None,
    ) -> GlooTrainerWeightTransferEngine:
        if source is None:
            raise ValueError("rlvr_gloo weight transfer needs a WeightSource")
        engine = cls(client=client, source=source, is_sender=init_info.is_sender, packed=False)
        if not engine.is_sender:  # other trainer ranks only join the source's gathers in send_weights
            return engine
        worker_info = dict(
            master_address=init_info.master_address,
            master_port=init_info.master_port,
            rank_offset=1,
            world_size=init_info.world_size,
        )
        # Both sides block in the rendezvous: join it on a side thread while the server's workers join it
        # through the HTTP call, so that an error the server answers with surfaces at once. The store's socket
        # listens before the workers are asked to connect.
        listen = socket.create_server((init_info.master_address, init_info.master_port))
        opened: list = []
        joiner = threading.Thread(
            target=lambda: opened.append(
                _open_group(init_info.master_address, init_info.master_port, 0, init_info.world_size, listen)
            ),
            daemon=True,
        )
        joiner.start()
        client.init_weight_transfer_engine(worker_info)  # returns when every worker has joined
        joiner.join(TIMEOUT.total_seconds())
        if not opened:
            raise RuntimeError(
                f"rlvr_gloo weight transfer: the trainer could not join the group at "
                f"{init_info.master_address}:{init_info.master_port}"
            )
        engine.model_update_group = opened[0]
        return engine

    def _broadcast(self, source: WeightSource, meta: list[ParamMeta]) -> None:
        if not self.is_sender:
            for _ in source:  # every rank materialises each tensor (a collective under FSDP)
                pass
            return
        for _name, tensor in self._checked_iter(source, meta):
            self.model_update_group.broadcast(tensor.detach().cpu().contiguous(), 0).wait()

    def shutdown(self) -> None:
        if self.model_update_group is not None:
            _close_group(self.model_update_group)
            self.model_update_group = None


def register() -> None:
    """Add the backend to vLLM's worker and trainer registries (once per process)."""
    for factory, engine in (
        (WeightTransferEngineFactory, GlooWeightTransferEngine),
        (WeightTransferTrainerFactory, GlooTrainerWeightTransferEngine),
    ):
        with contextlib.suppress(ValueError):  # registered already
            factory.register_engine(BACKEND, engine)


class GlooWorkerExtension:
    """Named as vLLM's `--worker-extension-cls` by the rollout server on CPU: vLLM imports this module in each
    worker process before it builds the worker's weight-transfer engine. It adds no methods."""


register()  # the import is the worker's only hook before vLLM builds its transfer engine (see above)
