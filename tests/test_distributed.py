"""Data parallelism under `accelerate launch` (2 gloo processes on CPU) against one process.

The learner splits the batch's micro-batches across ranks; the loss normaliser, the metrics and the entropy
quantiles must still be the whole batch's, so 2 processes and 1 give the same numbers. End to end, each rank
samples its share of the prompts with the per-prompt vLLM seeds, so the whole run matches too, and its
checkpoint resumes in one process.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import BIN, TWO_STEPS, assert_same_metrics, metrics_lines, run_train, train_cmd, train_env
from margins import within
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from rlvr import checkpoint, sharded_checkpoint
from rlvr.cli.export import main as export_main

ROOT = Path(__file__).resolve().parents[1]
UPDATE_ONCE = ROOT / "tests" / "dist" / "update_once.py"
SHARD_ON_CPU = ROOT / "tests" / "dist" / "shard_on_cpu.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, *cmd: str, config: str = "ddp.yaml", **kwargs) -> subprocess.CompletedProcess:
    """`cmd` (a script and its arguments) under `accelerate launch` with configs/accelerate/`config`."""
    launcher = [str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / "configs/accelerate" / config)]
    launcher += [
        "--num_processes",
        str(nproc),
        "--mixed_precision",
        "no",
        "--main_process_port",
        str(free_port()),
    ]
    proc = subprocess.run([*launcher, *cmd], capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def assert_close_state(a: dict, b: dict, rel: float) -> None:
    """Per tensor, the norm of the difference within `rel` of the norm. The two-process runs are held to 1e-4:
    a key bias's gradient is small (it shifts a query's logits almost uniformly; only RoPE makes it depend on
    the key's position), so Adam's normalised step carries its rounding: k_proj.bias measured 1.5e-6 apart here,
    1.06e-5 on another AMD EPYC. A rank's gradient missing or not averaged moves each tensor by its update,
    about 1e-2 of its norm in these 2 steps."""
    assert a.keys() == b.keys()
    for k in a:
        diff = (a[k] - b[k]).norm() / a[k].norm().clamp(min=1e-12)
        within(diff, rel, k)


@pytest.mark.parametrize("loss_agg,pack", [("token_mean", "pad"), ("seq_mean_token_mean", "pack")])
def test_two_processes_update_like_one(tmp_path, loss_agg, pack):
    """One update (2 mini-batches, KL to a reference, 80/20 entropy mask) on the same 28-sequence batch, each of
    2 ranks holding only its slice of each mini-batch."""
    subprocess.run([sys.executable, str(UPDATE_ONCE), str(tmp_path / "one.pt"), loss_agg, pack], check=True)
    launch(2, str(UPDATE_ONCE), str(tmp_path / "two.pt"), loss_agg, pack)
    one, two = (torch.load(tmp_path / f, weights_only=False) for f in ("one.pt", "two.pt"))
    assert (one["world"], two["world"]) == (1, 2)
    # learner/padding_frac is not compared: each rank lays out its own rows in micro-batches, so the forwards
    # (and their padding) depend on the number of ranks
    for key in ("loss/policy", "kl/ref", "grad/norm", "learner/pg_token_frac"):
        # kl/ref (~6e-5) is a second-order quantity: with d = ref_logp - logp ~ 1e-2 and float32 log-probs of ~-5
        # (ulp 5e-7), k3 ~ d^2/2 carries ~1e-4 relative rounding: measured 3.8e-6 apart on an AMD EPYC
        rel = 1e-4 if key == "kl/ref" else 1e-5
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], rel=rel), key
    assert_close_state(one["state"], two["state"], rel=1e-4)
    for key, value in one["entropy"].items():  # quantiles, mean, histogram over all ranks' tokens
        # each token's entropy in another micro-batch shape: float32 rounding, measured 1.7e-7 relative; a
        # rank's tokens missing from the sums or the bisection moves a quantile by ~1e-2
        assert two["entropy"][key] == pytest.approx(value, rel=1e-5), key
    # rank 0 trained on its slice of each mini-batch: the first of its two groups
    assert one["rows"] == list(range(28)) and two["rows"] == [*range(7), *range(14, 21)], two["rows"]
    # what crossed during the update: counts, sums, one count per row, the bisections' counts; never the other
    # rank's rows, which would weigh others_bytes (and, as pi_old and the reference, 8 more bytes per token)
    assert one["received"] == 0
    within(two["received"], two["others_bytes"] / 2, "bytes received by rank 0 during the update")


def policy_weights(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's policy weights, full (policy/) or sharded (merged from every rank's shard)."""
    if sharded_checkpoint.is_sharded(checkpoint_dir):
        return sharded_checkpoint.read_full(checkpoint_dir)
    return load_file(checkpoint_dir / "policy" / "model.safetensors")


# how each case checkpoints: DDP and FSDP2 one shard per rank (FSDP2's written in the background), ZeRO-3 gathered
CHECKPOINTS = {
    "ddp.yaml": ("trainer.checkpoint_format=sharded",),
    "fsdp2.yaml": ("trainer.checkpoint_format=sharded", "trainer.checkpoint_async=true"),
    "zero3.yaml": (),
}


@pytest.mark.parametrize("config", ["ddp.yaml", "fsdp2.yaml", "zero3.yaml"])
def test_two_process_run_matches_one_and_resumes_in_one(tiny_cache, two_step_run, tmp_path, config):
    """rlvr-train with 2 processes (data parallel, or sharded by FSDP2 or ZeRO-3 with the weights gathered into
    each rank's vLLM engine at every sync) gives the 1-process run's metrics and checkpoint, written as one shard
    per rank (DDP, FSDP2) or gathered (ZeRO-3). FSDP2's shards go on in 2 processes and in 1 with the same
    metrics, and rlvr-export merges them into a directory that transformers loads."""
    overrides = (*TWO_STEPS, *CHECKPOINTS[config])
    one, two = two_step_run, tmp_path / "two"
    # rlvr-train's arguments, after the launcher's; sharded through the script that lets accelerate shard on CPU
    cmd = train_cmd(two, *overrides)
    if config != "ddp.yaml":
        cmd[0] = str(SHARD_ON_CPU)
    proc = launch(2, *cmd, config=config, env=train_env(tiny_cache), cwd=tmp_path)
    log = (two / "train.log").read_text()
    assert log.count("learner: 2 process(es)") == 1, proc.stderr[-2000:]  # rank 0 alone writes train.log
    setup = {
        "ddp.yaml": "MULTI_CPU, full policy on every process",
        "fsdp2.yaml": "FSDP, policy sharded (FSDP2)",
        "zero3.yaml": "DEEPSPEED, policy sharded (ZeRO-3)",
    }
    assert f"learner: 2 process(es), {setup[config]}" in log

    lines_one, lines_two = metrics_lines(one), metrics_lines(two)
    assert [m["step"] for m in lines_two] == [1, 2]
    assert_same_metrics(lines_two, lines_one, skip=("learner/padding_frac", "dist/"))
    # what crossed ranks: headers, the groups moved to their trainer, counts and sums; a rank alone receives nothing
    assert all(m["dist/bytes_received"] == 0 for m in lines_one)
    assert all(m["dist/bytes_received"] > 0 for m in lines_two)
    saved = two / "checkpoints/step_000002"
    weights = [policy_weights(d / "checkpoints/step_000002") for d in (one, two)]
    assert_close_state(weights[0], {k: weights[1][k] for k in weights[0]}, rel=1e-4)  # DCP's: lm_head too
    if CHECKPOINTS[config]:
        assert sorted(p.name for p in (saved / "sharded").iterdir()) == [
            ".digests-0.json",  # each rank's record of its shard's sha256, which the manifest takes
            ".digests-1.json",
            ".metadata",
            "__0_0.distcp",
            "__1_0.distcp",
        ]
        assert checkpoint.verify_checkpoint(saved) is None

    # DDP's weights are whole on every rank: resharding is FSDP2's case below. ZeRO-3's gathered checkpoint is
    # the 1-process format (tests/test_resume.py); tests/test_sharded.py loads it into one plain process
    if config != "fsdp2.yaml":
        return
    assert export_main([str(saved), str(tmp_path / "hf")]) == 0
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert_close_state(dict(exported.state_dict()), weights[1], rel=0.0)
    # step 3 from the shards in 2 processes (into another run dir), then in one: the same metrics
    again = tmp_path / "again"
    on = [o for o in overrides if not o.startswith("trainer.total_steps=")]
    cmd = train_cmd(again, *on, "trainer.total_steps=3", f"trainer.resume={saved}")
    cmd[0] = str(SHARD_ON_CPU)
    launch(2, *cmd, config=config, env=train_env(tiny_cache), cwd=tmp_path)
    run_train(tiny_cache, two, *on, "trainer.total_steps=3")
    assert [m["step"] for m in metrics_lines(two)] == [1, 2, 3]
    assert (two / "checkpoints/latest").read_text().strip() == "step_000003"
    assert_same_metrics(metrics_lines(again), metrics_lines(two)[2:], skip=("learner/padding_frac", "dist/"))


def _accelerator(kind: str, *, fsdp2: bool = False, zero_stage: int = 3, offload: str = "none"):
    """What check_supported reads of an Accelerator: its distributed type and the plugins' settings."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    zero = {"stage": zero_stage, "offload_optimizer": {"device": offload}}
    plugin = SimpleNamespace(zero_stage=zero_stage, deepspeed_config={"zero_optimization": zero})
    return SimpleNamespace(
        distributed_type=DistributedType(kind), is_fsdp2=fsdp2, state=SimpleNamespace(deepspeed_plugin=plugin)
    )


def test_unsupported_parallelism_is_refused_with_the_reason():
    """FSDP1, ZeRO stages 1-2 and DeepSpeed's offload would checkpoint state we cannot gather; sharding with the
    hf sampler would run different numbers of collective forwards on different ranks: refused up front, naming
    the key and the fix. DDP, FSDP2 (tests/test_sharded.py) and ZeRO-3 pass."""
    from rlvr import distributed
    from rlvr.config import ConfigError

    refused = [
        (_accelerator("FSDP"), "vllm", "accelerate distributed_type: FSDP version 1.*fsdp_version: 2"),
        (_accelerator("FSDP", fsdp2=True), "hf", "rollout.backend: 'hf'.*rollout.backend=vllm under FSDP"),
        (_accelerator("DEEPSPEED"), "hf", "rollout.backend: 'hf'.*rollout.backend=vllm under DEEPSPEED"),
        (_accelerator("DEEPSPEED", zero_stage=2), "vllm", "deepspeed_config.zero_stage: 2 .*use 3"),
        (_accelerator("DEEPSPEED", offload="cpu"), "vllm", "offload_optimizer_device: offload .*none"),
    ]
    for accelerator, backend, message in refused:
        with pytest.raises(ConfigError, match=message):
            distributed.check_supported(accelerator, backend)
    distributed.check_supported(_accelerator("FSDP", fsdp2=True), "vllm")
    distributed.check_supported(_accelerator("DEEPSPEED"), "vllm")
    for fine in ("NO", "MULTI_CPU", "MULTI_GPU"):
        for backend in ("hf", "vllm"):
            distributed.check_supported(_accelerator(fine), backend)


EXIT_RANK = """
import atexit, logging, sys
from rlvr import distributed as dist
logging.basicConfig(filename=sys.argv[1], level=logging.INFO)
atexit.register(lambda: print("finalized"))
print("stdout line", end="")
logging.getLogger("rlvr").info("log line")
dist.exit_launched_rank()
print(" returned")
"""


@pytest.mark.parametrize("world", ["1", "2"])
def test_a_launched_rank_exits_0_past_finalization_with_its_output_flushed(tmp_path, world):
    """WORLD_SIZE > 1 (a rank under accelerate launch): exit 0 at once, stdout and the log written, no atexit
    or finalization. One process: the call returns and the interpreter ends as usual."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | {"WORLD_SIZE": world}  # buffered
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_RANK, str(tmp_path / "log")], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "log").read_text().strip().endswith("log line")
    assert proc.stdout == ("stdout line" if world == "2" else "stdout line returned\nfinalized\n")
