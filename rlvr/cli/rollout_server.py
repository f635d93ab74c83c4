"""`rlvr-rollout-server MODEL`: vLLM as a separate rollout server (`rollout.mode=server`).

    CUDA_VISIBLE_DEVICES=4,5,6,7 rlvr-rollout-server /models/qwen --host 0.0.0.0 --port 8000 \\
        --tensor-parallel-size 2 --data-parallel-size 2
    rlvr-train rollout=server rollout.server_url=http://HOST:8000 rollout.server_launch=false ...

This is vLLM's own OpenAI-compatible server (`vllm serve`), started with the engine settings of the colocated
engine (`rlvr.rollout.vllm_engine.engine_kwargs`: dtype, processed logprobs, CPU KV cache ...) so that both sample
alike, plus what a trainer needs from it: the token-in/token-out `/inference/v1/generate` route
(`--enable-scale-out`), the RLHF weight-update routes (VLLM_SERVER_DEV_MODE=1: they also expose other
development routes, so serve on a trusted network only) and a weight-transfer backend: vLLM's "nccl" on GPUs,
rlvr's gloo one on CPU (rlvr.rollout.server_transfer). Flags this command does not know go to `vllm serve`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from collections.abc import MutableMapping

from rlvr.config import RolloutConfig

CPU_EXTENSION = "rlvr.rollout.server_transfer.GlooWorkerExtension"


def _flags(kwargs: dict) -> list[str]:
    """Engine keyword arguments as `vllm serve` flags (None: vLLM's default; False: --no-<flag>)."""
    out: list[str] = []
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + flag[2:])
        elif value is not None:
            out += [flag, str(value)]
    return out


def vllm_serve_argv(args: argparse.Namespace, on_cpu: bool) -> list[str]:
    """The `vllm serve` command line for rlvr's settings (without the extra flags passed through)."""
    from rlvr.rollout.vllm_engine import engine_kwargs

    cfg = RolloutConfig(
        backend="vllm",
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        tensor_parallel_size=args.tensor_parallel_size,
        gpu_memory_utilization=args.gpu_memory_utilization,
        enable_prefix_caching=args.enable_prefix_caching,
    )
    kwargs = engine_kwargs(args.model, cfg, on_cpu)
    kwargs.update(
        host=args.host,
        port=args.port,
        seed=args.seed,
        enable_scale_out=True,
        weight_transfer_config=json.dumps({"backend": "rlvr_gloo" if on_cpu else "nccl"}),
    )
    if on_cpu:
        kwargs["worker_extension_cls"] = CPU_EXTENSION
    return _flags(kwargs)


def _exit_with_parent(parent_pid: int) -> None:
    """Stop this server (gracefully, as on SIGTERM) once the process that launched it is gone, even killed."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


# seconds an idle HTTP connection is kept open (vLLM's default: 5). The trainer's client reuses one pooled
# connection per thread across a whole learner step; a server that closes it just as the next step's request is
# sent resets that request ("Connection reset by peer": seen in a test whose steps took about 5 s).
KEEP_ALIVE_S = "3600"


def set_server_environment(env: MutableMapping[str, str]) -> None:
    """The variables vLLM reads at import: the RLHF weight-update routes on, and idle connections kept
    KEEP_ALIVE_S seconds unless the user set VLLM_HTTP_TIMEOUT_KEEP_ALIVE."""
    env["VLLM_SERVER_DEV_MODE"] = "1"
    env.setdefault("VLLM_HTTP_TIMEOUT_KEEP_ALIVE", KEEP_ALIVE_S)


def build_parser() -> argparse.ArgumentParser:
    """rlvr's own flags (the trainer launches the server with them); the others are `vllm serve`'s."""
    defaults = RolloutConfig()
    p = argparse.ArgumentParser(
        prog="rlvr-rollout-server",
        description=__doc__.splitlines()[0],
        epilog="Other flags are passed on to `vllm serve` (e.g. --data-parallel-size 2).",
        allow_abbrev=False,  # an abbreviation could swallow a `vllm serve` flag
    )
    p.add_argument("model", help="Hugging Face model dir (the trainer's model.path)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--dtype", default=defaults.dtype, help="auto: float32 on CPU, the model's on GPU")
    p.add_argument("--max-model-len", type=int, default=defaults.max_model_len)
    p.add_argument("--tensor-parallel-size", type=int, default=defaults.tensor_parallel_size)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="of the server's own GPUs")
    p.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parent-pid", type=int, default=None, help="exit when this process ends (the trainer's)")
    return p


def main(argv: list[str] | None = None) -> None:
    args, passthrough = build_parser().parse_known_args(argv)
    if args.parent_pid is not None:  # first: vLLM's start-up alone takes half a minute on a few cores
        _exit_with_parent(args.parent_pid)

    set_server_environment(os.environ)
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
    from vllm.logger import configure_logging_from_args
    from vllm.platforms import current_platform
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    cli_env_setup()
    parser = make_arg_parser(FlexibleArgumentParser(prog="rlvr-rollout-server"))
    serve_args = parser.parse_args(vllm_serve_argv(args, current_platform.is_cpu()) + passthrough)
    configure_logging_from_args(serve_args)
    serve = ServeSubcommand()
    serve.validate(serve_args)
    serve.cmd(serve_args)


if __name__ == "__main__":
    main()
