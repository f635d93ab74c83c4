"""One learner update with the policy sharded by FSDP2 (`fully_shard`), run as each rank under `accelerate launch`
(tests/test_sharded.py compares it with one plain process). Then the checkpoint round trip the other way: a
1-process checkpoint loaded into a fresh sharded learner.

accelerate runs FSDP only on GPUs (on CPU it always wraps the model in DDP), but `fully_shard` itself runs on CPU
with gloo: `shard_by_hand` stands in for accelerate's FSDP2 `prepare`.

usage: sharded_update.py OUT_DIR ONE_PROCESS_CHECKPOINT
writes (rank 0) OUT_DIR/two.pt (metrics, gathered weights and optimizer state after the update, the reference's
weights after a reset), OUT_DIR/run/checkpoints/step_000001 (the real save path) and OUT_DIR/loaded.pt (the
gathered state of a sharded learner that loaded ONE_PROCESS_CHECKPOINT).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import rollout_batch  # noqa: E402

from rlvr import checkpoint  # noqa: E402
from rlvr import distributed as dist  # noqa: E402
from rlvr.config import AlgoConfig, EntropyMaskConfig, KLConfig, LearnerConfig, OptimConfig  # noqa: E402
from rlvr.learner import Learner  # noqa: E402
from rlvr.tiny_model import build_model, build_tokenizer  # noqa: E402


def shard_by_hand(accelerator: Accelerator) -> None:
    """Make `accelerator.prepare(model, optimizer)` do what accelerate's FSDP2 prepare does, without DDP:
    `fully_shard` each decoder layer, then the whole module, load rank 0's weights into every rank's shards
    (its cpu_ram_efficient_loading, on in configs/accelerate/fsdp2.yaml), and point the optimizer at the
    sharded (new, DTensor) parameters."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import fully_shard

    def prepare(model, optimizer):
        before = dict(model.named_parameters())
        full = {k: v.clone() for k, v in model.state_dict().items()}
        for layer in model.policy.model.layers:
            fully_shard(layer)
        fully_shard(model)
        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        set_model_state_dict(model, full, options=options)
        after = dict(model.named_parameters())
        sharded = {id(before[name]): after[name] for name in before}
        for group in optimizer.param_groups:
            group["params"] = [sharded[id(p)] for p in group["params"]]
        return model, optimizer

    accelerator.prepare = prepare


def settings() -> tuple[AlgoConfig, OptimConfig]:
    """update_once.py's settings (2 mini-batches, KL to a reference, the 80/20 entropy mask: the no-grad pre-pass
    runs, on the policy and on the reference); also benchmarks/gpu_fsdp2_check.py's."""
    algo = AlgoConfig(
        loss_agg="token_mean",
        num_minibatches=2,
        kl=KLConfig(coef=0.1),
        entropy_mask=EntropyMaskConfig(top_frac=0.5),
    )
    # Adam's eps=1 makes the step proportional to the gradient (see tests/test_learner.py)
    return algo, OptimConfig(lr=1e-2, eps=1.0, max_grad_norm=1e9)


def make_learner(model) -> Learner:
    """A learner with `settings()`, sharded when there are several processes."""
    algo, optim = settings()
    accelerator = Accelerator(cpu=True)
    if dist.world_size() > 1:
        shard_by_hand(accelerator)
        if dist.rank() > 0:  # what transformers loads there under cpu_ram_efficient_loading
            for p in model.parameters():
                p.detach().zero_()
    return Learner(model, accelerator, algo, optim, LearnerConfig(micro_batch_size=2), 1.0, 10)


def one_update() -> tuple[Learner, dict]:
    """The tiny model after one update on update_once.py's 14-sequence batch (7 micro-batches: 4 and 3 per
    rank in the pre-pass); returns the learner and the update's metrics."""
    tokenizer = build_tokenizer()
    learner = make_learner(
        build_model(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed=0)
    )
    metrics, _ = learner.update(rollout_batch(tokenizer, n=14, seed=1), seed=0)
    return learner, metrics


def main(out: Path, one_process_checkpoint: Path) -> None:
    from transformers import AutoModelForCausalLM

    learner, metrics = one_update()
    assert learner.sharded == (dist.world_size() > 1)
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
    learner.reset_reference()  # shard to shard
    reference = checkpoint.gather_full_state(learner.reference)[0]
    if dist.is_main():
        torch.save({"metrics": metrics, "world": dist.world_size(), "reference": reference}, out / "two.pt")

    # a 1-process checkpoint into a sharded learner, as the trainer resumes: weights before sharding
    model = AutoModelForCausalLM.from_pretrained(one_process_checkpoint / "policy", dtype=torch.float32)
    learner = make_learner(model)
    checkpoint.load_optimizer_state(
        learner.unwrapped, learner.optimizer, checkpoint.load_state(one_process_checkpoint)["optimizer"]
    )
    # the trainer's resume of a reset reference: here the base model, which differs from the loaded policy
    tokenizer = build_tokenizer()
    base = build_model(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed=0)
    checkpoint.load_full_state(learner.reference, base.state_dict())
    weights, optimizer = checkpoint.gather_full_state(learner.unwrapped, learner.optimizer)
    reference = checkpoint.gather_full_state(learner.reference)[0]
    if dist.is_main():
        torch.save({"weights": weights, "optimizer": optimizer, "reference": reference}, out / "loaded.pt")
    dist.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
