"""One learner update with the policy sharded by accelerate's FSDP2 `prepare` or partitioned by DeepSpeed ZeRO-3,
run as each rank under `accelerate launch --config_file configs/accelerate/fsdp2.yaml` (or zero3.yaml)
(tests/test_sharded.py compares it with one plain process). Then the checkpoint round trip the other way: a
1-process checkpoint loaded into a fresh sharded learner. Last, under FSDP2, the same prepare with
fsdp_cpu_ram_efficient_loading, which unties the embeddings: refused.

`shard_on_cpu.shard_on_cpu` makes accelerate take its FSDP2 path on CPU, and ZeRO-3 partition every parameter.

usage: sharded_update.py OUT_DIR ONE_PROCESS_CHECKPOINT
writes (rank 0) OUT_DIR/two.pt (metrics, the weights as weight sync streams them, the reference's weights after
a reset, the refusal's message), OUT_DIR/run/checkpoints/step_000001 (the real save path) and OUT_DIR/loaded.pt
(the gathered state of a sharded learner that loaded ONE_PROCESS_CHECKPOINT).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import rank_share, rollout_batch  # noqa: E402

from rlvr import checkpoint  # noqa: E402
from rlvr import distributed as dist  # noqa: E402
from rlvr import zero3  # noqa: E402
from rlvr.config import AlgoConfig, EntropyMaskConfig, KLConfig, LearnerConfig, OptimConfig  # noqa: E402
from rlvr.learner import Learner  # noqa: E402
from rlvr.tiny_model import build_model, build_tokenizer  # noqa: E402


def settings() -> tuple[AlgoConfig, OptimConfig]:
    """update_once.py's settings (2 mini-batches, KL to a reference, the 80/20 entropy mask: the no-grad pre-pass
    runs, on the policy and on the reference); also benchmarks/gpu_fsdp2_check.py's."""
    algo = AlgoConfig(
        loss_agg="token_mean",
        group_size=7,  # the batches of 28 and 21 rows: 4 and 3 groups over 2 mini-batches
        num_minibatches=2,
        kl=KLConfig(coef=0.1, reset_optimizer=True),
        entropy_mask=EntropyMaskConfig(top_frac=0.5),
    )
    # Adam's eps=1 makes the step proportional to the gradient (see tests/test_learner.py)
    return algo, OptimConfig(lr=1e-2, eps=1.0, max_grad_norm=1e9)


def make_learner(model) -> Learner:
    """A learner with `settings()` (sharded when launched with FSDP2)."""
    algo, optim = settings()
    accelerator = dist.make_accelerator("no")
    return Learner(model, accelerator, algo, optim, LearnerConfig(micro_batch_size=2), 1.0, 10)


def update(learner: Learner, n: int, batch_seed: int, seed: int) -> dict:
    """One update on the n-row `rollout_batch` of batch_seed, each rank on its slice of each mini-batch; its
    metrics."""
    batch, layout = rank_share(rollout_batch(build_tokenizer(), n=n, seed=batch_seed), learner.algo)
    return learner.update(batch, seed=seed, layout=layout).metrics


def one_update() -> tuple[Learner, dict]:
    """The tiny model after one update on a 28-sequence batch (2 mini-batches of 2 groups: each of 2 ranks
    trains on one group of each, 4 micro-batches); returns the learner and the update's metrics."""
    tokenizer = build_tokenizer()
    learner = make_learner(
        build_model(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed=0)
    )
    return learner, update(learner, 28, batch_seed=1, seed=0)


def after_reset(learner: Learner) -> tuple[dict, dict, dict]:
    """A ProRL reset (the reference := the policy; Adam's state cleared, as `settings()` asks), then one more
    update on another batch: its metrics, and the gathered weights and optimizer state after it. The batch's
    3 groups make mini-batches of 2 and 1: of 2 ranks, the second has no rows of the second mini-batch and joins
    its collective forwards and gradient reduction with idle ones."""
    learner.reset_reference()
    metrics = update(learner, 21, batch_seed=2, seed=1)
    return metrics, *checkpoint.gather_full_state(learner.unwrapped, learner.optimizer)


def main(out: Path, one_process_checkpoint: Path) -> None:
    from shard_on_cpu import shard_on_cpu
    from transformers import AutoModelForCausalLM

    from rlvr.config import ConfigError
    from rlvr.rollout.vllm_engine import checkpoint_names

    shard_on_cpu()
    learner, metrics = one_update()
    sharding = learner.sharding
    streamed = {name: tensor.clone() for name, tensor in checkpoint_names(learner.unwrapped)}  # weight sync
    weights, optimizer = checkpoint.gather_full_state(learner.unwrapped, learner.optimizer)
    if dist.is_main():
        checkpoint.save_checkpoint(
            out / "run",
            1,
            learner.unwrapped,
            build_tokenizer(),
            None,
            {"optimizer": optimizer},
            1,
            policy_state=weights,
        )
    reset = after_reset(learner)  # the reference reset shard to shard
    reference = checkpoint.gather_full_state(learner.reference)[0]
    reference_sharded = dist.is_sharded(learner.reference) or zero3.is_zero3(learner.reference)
    if dist.is_main():
        saved = {"metrics": metrics, "world": dist.world_size(), "sharding": sharding}
        saved["reference_sharded"] = reference_sharded
        saved.update(streamed=streamed, reference=reference, after_reset=reset)

    # a 1-process checkpoint into a sharded learner, as the trainer resumes: weights before sharding. Under
    # ZeRO-3 from the base model instead: the gathered weights (the fp32 masters) must then come from the file
    tokenizer = build_tokenizer()
    if sharding == "ZeRO-3":
        model = build_model(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed=0)
    else:
        model = AutoModelForCausalLM.from_pretrained(one_process_checkpoint / "policy", dtype=torch.float32)
    learner = make_learner(model)
    learner.restore(
        checkpoint.load_state(one_process_checkpoint)["optimizer"], one_process_checkpoint / "policy"
    )
    # the trainer's resume of a reset reference: here the base model, which differs from the loaded policy
    base = build_model(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed=0)
    checkpoint.load_full_state(learner.reference, base.state_dict())
    weights, optimizer = checkpoint.gather_full_state(learner.unwrapped, learner.optimizer)
    reference = checkpoint.gather_full_state(learner.reference)[0]
    if dist.is_main():
        torch.save({"weights": weights, "optimizer": optimizer, "reference": reference}, out / "loaded.pt")

    refusal = None
    if sharding == "FSDP2":
        learner.accelerator.state.fsdp_plugin.cpu_ram_efficient_loading = (
            True  # shared by the next Accelerator
        )
        try:
            make_learner(build_model(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed=0))
        except ConfigError as e:
            refusal = str(e)
    if dist.is_main():
        torch.save({**saved, "refusal": refusal}, out / "two.pt")
    dist.shutdown()
    dist.exit_launched_rank()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
