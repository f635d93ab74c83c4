"""Rollout on a vLLM server in its own process, on its own devices (`rollout.mode=server`).

The server is vLLM's own OpenAI-compatible server, started by `rlvr-rollout-server` (rlvr.cli.rollout_server)
with the colocated engine's settings; the trainer starts it itself (`rollout.server_launch`) or connects to one
(`rollout.server_url`). Prompts and weights go through vLLM's own routes and weight-transfer engines:

- prompts: vLLM's token-in/token-out route `/inference/v1/generate`, one request per prompt (sent together;
  the server batches them) with exactly the colocated engine's sampling parameters
  (`vllm_engine.request_params`: per-prompt seeds, the sampled tokens' processed logprobs), so that for the
  same weights the server samples what the colocated engine samples.
- weights: vLLM's weight transfer (`vllm.distributed.weight_transfer`): the trainer drives the server's RLHF
  routes and broadcasts the learner's tensors to the server's workers, which load them in place (layerwise
  reload); then the server's prefix cache is reset (`/reset_prefix_cache`), as the colocated engine does.
  On GPUs the broadcast is vLLM's NCCL backend (learner and server each on their own GPUs). vLLM has no CPU
  data plane, so on CPU it is rlvr's gloo backend plugged into vLLM's registry (rlvr.rollout.server_transfer):
  the same handshake over loopback, gloo instead of NCCL for the bytes.

A launched server is its own process group: it is stopped on close, at interpreter exit, and it stops itself
when the trainer process dies (`--parent-pid`); its output goes to `<trainer.output_dir>/rollout_server.log`.
With data parallelism (several trainer processes) rank 0 launches the server and sends the weights (the other
ranks take part in the gathers of sharded weights); every rank samples its share of the prompts from it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import requests
import torch
from vllm.distributed.weight_transfer import WeightSource
from vllm.distributed.weight_transfer.base import ParamMeta

from rlvr import distributed as dist
from rlvr import zero3
from rlvr.config import ConfigError, RolloutConfig
from rlvr.rollout.base import Completion, SamplingParams
from rlvr.rollout.vllm_engine import (
    ByteCount,
    checkpoint_name,
    checkpoint_names,
    make_completion,
    request_params,
    stop_token_ids,
)

log = logging.getLogger(__name__)

MAX_CONCURRENT_REQUESTS = 256  # prompts in flight to the server at once (it batches them)
STOP_TIMEOUT_S = 60.0  # how long a launched server may take to shut down before it is killed
LOG_TAIL_CHARS = 3000


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _address_toward(host: str) -> str:
    """This machine's address on the route to `host` (where the server's workers reach the trainer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, 9))  # UDP: picks the route, sends nothing
        return s.getsockname()[0]


WILDCARDS = ("0.0.0.0",)
LOOPBACK_PREFIXES = ("127.", "localhost")


def launch_address(cfg: RolloutConfig) -> tuple[str, str, int | None]:
    """A launched server's (bind address, advertised host, port or None for a free one): rollout.server_bind
    and server_advertise over server_url's host, a wildcard bind advertised under this node's name."""
    split = urlsplit(cfg.server_url) if cfg.server_url else None
    url_host = split.hostname if split else None
    bind = cfg.server_bind or url_host or "127.0.0.1"
    advertise = cfg.server_advertise or url_host or (socket.getfqdn() if bind in WILDCARDS else bind)
    return bind, advertise, split.port if split else None


def spans_nodes(environ: dict[str, str], world_size: int) -> bool:
    """Whether the launcher put this run's ranks on more than one node (LOCAL_WORLD_SIZE < WORLD_SIZE)."""
    return int(environ.get("LOCAL_WORLD_SIZE", world_size)) < world_size


def check_reachable(url: str, environ: dict[str, str], world_size: int) -> None:
    """A loopback server URL reaches no rank on another node: each would dial its own machine."""
    host = urlsplit(url).hostname or ""
    if spans_nodes(environ, world_size) and host.startswith(LOOPBACK_PREFIXES):
        raise ConfigError(
            "rollout.server_bind",
            f"the rollout server's address {url} is loopback, but the ranks span nodes "
            f"(LOCAL_WORLD_SIZE {environ.get('LOCAL_WORLD_SIZE')} < world size {world_size}): set "
            "rollout.server_bind=0.0.0.0 (and rollout.server_advertise=HOST where this node's name does not "
            "resolve from the others), or rollout.server_url=http://HOST:PORT",
        )


def _generation_config(model_path: str) -> dict:
    """The model's generation config, as the server reads it (its EOS ids end samples too)."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_path).to_diff_dict()
    except OSError:  # no generation_config.json
        return {}


# What a data-parallel launcher (torchrun, `accelerate launch`) tells each trainer process about its place in the
# trainer's world. A server launched from such a process is not part of that world: vLLM sets up its own.
LAUNCHER_VARS = frozenset(
    [
        "RANK",
        "LOCAL_RANK",
        "GROUP_RANK",
        "ROLE_RANK",
        "ROLE_NAME",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "GROUP_WORLD_SIZE",
        "ROLE_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
    ]
)
LAUNCHER_PREFIXES = ("TORCHELASTIC_", "ACCELERATE_", "FSDP_")


def server_env(environ: dict[str, str]) -> dict[str, str]:
    """The trainer's environment for a launched server, without the launcher's data-parallel variables and
    the switch a colocated engine in this process sets."""
    return {
        k: v
        for k, v in environ.items()
        if k not in LAUNCHER_VARS
        and not k.startswith(LAUNCHER_PREFIXES)
        and k != "VLLM_ENABLE_V1_MULTIPROCESSING"
    }


class LaunchedServer:
    """`rlvr-rollout-server` as a child process (its own session, so that its engine process goes with it)."""

    def __init__(self, model_path: str, cfg: RolloutConfig, seed: int, log_path: Path):
        host, advertise, port = launch_address(cfg)
        port = port or _free_port(host)
        self.url = f"http://{advertise}:{port}"
        self.log_path = log_path
        cmd = [
            sys.executable,
            "-m",
            "rlvr.cli.rollout_server",
            model_path,
            *("--host", host, "--port", str(port), "--dtype", cfg.dtype, "--seed", str(seed)),
            *("--tensor-parallel-size", str(cfg.tensor_parallel_size)),
            *("--gpu-memory-utilization", str(cfg.gpu_memory_utilization)),
            *(("--max-model-len", str(cfg.max_model_len)) if cfg.max_model_len else ()),
            "--enable-prefix-caching" if cfg.enable_prefix_caching else "--no-enable-prefix-caching",
            *("--parent-pid", str(os.getpid())),
        ]
        env = server_env(os.environ)
        if cfg.server_devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = cfg.server_devices
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        atexit.register(self.stop)
        log.info("rollout server starting at %s (pid %d, log %s)", self.url, self.proc.pid, log_path)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM to the server's process group (vLLM shuts its engine down), SIGKILL to what lingers."""
        atexit.unregister(self.stop)
        self._signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(STOP_TIMEOUT_S)
        deadline = time.monotonic() + 5.0
        while self._signal(0) and time.monotonic() < deadline:  # the engine process ends just after
            time.sleep(0.2)
        self._signal(signal.SIGKILL)
        self.proc.wait()

    def _signal(self, sig: int) -> bool:
        """Signal the server's process group; False when nothing of it is left."""
        try:
            os.killpg(self.proc.pid, sig)
            return True
        except ProcessLookupError:
            return False


class ModelWeights(WeightSource):
    """The learner's weights as vLLM's trainer engines take them, under Hugging Face names (what the colocated
    engine loads too), floating tensors in the engine's dtype; metadata reads shapes without gathering sharded
    tensors (a DTensor's shape is its full shape; a ZeRO-3 partition's is in `ds_shape`). `bytes`: what the
    last iteration yielded."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype | None = None):
        self.model, self.dtype, self.bytes = model, dtype, 0

    def metadata(self) -> list[ParamMeta]:
        return [
            ParamMeta(checkpoint_name(n), self._dtype(t), zero3.full_shape(t))
            for n, t in self.model.state_dict(keep_vars=True).items()
        ]

    def _dtype(self, tensor: torch.Tensor) -> torch.dtype:
        return self.dtype if self.dtype is not None and tensor.is_floating_point() else tensor.dtype

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        counted = ByteCount(checkpoint_names(self.model, self.dtype))
        yield from counted
        self.bytes = counted.bytes


def server_dtype(info: dict) -> torch.dtype:
    """The engine's dtype from vLLM's `/server_info?config_format=json` answer."""
    name = str(info["vllm_config"]["model_config"]["dtype"]).removeprefix("torch.")
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise RuntimeError(f"rollout server: unknown model dtype {name!r} in /server_info")
    return dtype


class ServerRolloutEngine:
    def __init__(self, model_path: str, tokenizer, cfg: RolloutConfig, seed: int, log_path: Path):
        """`log_path`: where a launched server writes its output."""
        self.tokenizer, self.rank = tokenizer, dist.rank()
        self.server: LaunchedServer | None = None
        self.transfer = None
        self.dtype: torch.dtype | None = None  # the engine's, read from the server at the first sync
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=MAX_CONCURRENT_REQUESTS)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.pool = ThreadPoolExecutor(MAX_CONCURRENT_REQUESTS, thread_name_prefix="rollout-request")
        try:
            url = cfg.server_url
            if cfg.server_launch and self.rank == 0:
                self.server = LaunchedServer(model_path, cfg, seed, log_path)
                url = self.server.url
            self.url = dist.broadcast_object(url).rstrip("/")
            check_reachable(self.url, dict(os.environ), dist.world_size())
            self._wait_ready(cfg.server_start_timeout_s)
        except BaseException:
            self.close()
            raise
        self.eos_ids = stop_token_ids(tokenizer, _generation_config(model_path))

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.server is not None and self.server.proc.poll() is not None:
                raise RuntimeError(
                    f"the rollout server exited with code {self.server.proc.returncode} before it was ready; "
                    f"end of {self.server.log_path}:\n{self.server.log_tail()}"
                )
            try:
                if self.session.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or too busy starting to answer
                pass
            time.sleep(1.0)
        if self.server is not None:
            raise ConfigError(
                "rollout.server_start_timeout_s",
                f"the rollout server at {self.url} was not ready after {timeout_s:g}s; "
                f"end of {self.server.log_path}:\n{self.server.log_tail()}",
            )
        raise ConfigError(
            "rollout.server_url",
            f"no rollout server answered at {self.url} within {timeout_s:g}s (rollout.server_start_timeout_s); "
            f"start one with `rlvr-rollout-server MODEL --host HOST --port PORT`",
        )

    def _post(self, route: str, **kwargs) -> dict:
        response = self.session.post(f"{self.url}/{route}", **kwargs)
        if response.status_code != 200:
            raise RuntimeError(
                f"rollout server {self.url}/{route} answered {response.status_code}: {response.text[:1000]}"
            )
        return response.json()

    # ---- RolloutEngine --------------------------------------------------------------------------------
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        n: int,
        params: SamplingParams,
        seed: int,
        first_index: int = 0,
    ) -> list[list[Completion]]:
        bodies = [
            {"token_ids": list(p), "sampling_params": kw}
            for p, kw in zip(prompts, request_params(params, n, seed, len(prompts), first_index))
        ]
        answers = self.pool.map(lambda body: self._post("inference/v1/generate", json=body), bodies)
        return [
            [self._completion(c) for c in sorted(a["choices"], key=lambda c: c["index"])] for a in answers
        ]

    def _completion(self, choice: dict) -> Completion:
        logprobs = [entry["logprob"] for entry in choice["logprobs"]["content"]]
        return make_completion(
            choice["token_ids"], logprobs, choice["finish_reason"], self.eos_ids, self.tokenizer
        )

    @torch.no_grad()
    def sync_weights(self, model: torch.nn.Module) -> int:
        """The learner's weights to the server's workers in the engine's dtype; returns the bytes sent."""
        if self.dtype is None:
            self.dtype = server_dtype(
                self.session.get(f"{self.url}/server_info?config_format=json", timeout=60).json()
            )
        source = ModelWeights(model, self.dtype)
        if self.transfer is None:
            self.transfer = self._init_transfer(source)
        self.transfer.source = source
        self.transfer.send_weights()
        if self.rank == 0:  # cached prefixes hold keys/values computed with the old weights
            self._post("reset_prefix_cache")
        dist.barrier()  # no rank samples before the update is complete
        return source.bytes

    def _init_transfer(self, source):
        """vLLM's trainer-side weight-transfer engine, joined with the server's workers: NCCL on GPU, else gloo."""
        from vllm.distributed.weight_transfer import HTTPVLLMWeightSyncClient, WeightTransferTrainerFactory

        world_size = 1 + self.session.get(f"{self.url}/get_world_size", timeout=30).json()["world_size"]
        address = _address_toward(urlsplit(self.url).hostname)
        rendezvous = dict(
            master_address=address,
            master_port=_free_port(address),
            world_size=world_size,
            rank=self.rank,
        )
        if torch.cuda.is_available():
            from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

            info = NCCLTrainerInitInfo(**rendezvous)
        else:
            from rlvr.rollout.server_transfer import GlooTrainerInitInfo, register

            register()
            info = GlooTrainerInitInfo(**rendezvous)
        client = HTTPVLLMWeightSyncClient(self.url)
        return WeightTransferTrainerFactory.trainer_init(info, client=client, source=source)

    def close(self) -> None:
        transfer, self.transfer = self.transfer, None
        if transfer is not None:
            transfer.shutdown()
            if (
                self.rank == 0 and self.server is None
            ):  # a server that stays up frees its side for the next trainer
                try:
                    self._post("shutdown_weight_transfer_engine", timeout=30)
                except Exception as e:  # noqa: BLE001 - closing: report, go on
                    log.warning("rollout server: could not release the weight transfer: %s", e)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.session.close()
        server, self.server = self.server, None
        if server is not None:
            server.stop()
