"""One learner update on a fixed batch, run alone or as each rank under `accelerate launch`
(tests/test_distributed.py compares the two). Each rank keeps only its share of the batch (its slice of each
mini-batch). Rank 0 saves the metrics, the updated weights, the entropy quantiles of the policy before the
update, the rows it trained on and the bytes it received from the other rank during the update.

usage: update_once.py OUT.pt LOSS_AGG PACK
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import rank_share, rollout_batch  # noqa: E402

from rlvr import distributed as dist  # noqa: E402
from rlvr.config import AlgoConfig, EntropyMaskConfig, KLConfig, LearnerConfig, OptimConfig  # noqa: E402
from rlvr.batch_stats import sharded_entropy_stats  # noqa: E402
from rlvr.learner import Learner  # noqa: E402
from rlvr.metrics import entropy_stats  # noqa: E402
from rlvr.tiny_model import build_model, build_tokenizer  # noqa: E402


def main(out: str, loss_agg: str, pack: bool) -> None:
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed=0)
    # several optimizer steps (mini-batches), a KL term against a reference and the 80/20 entropy mask:
    # every normaliser and every whole-batch selection must come out as in one process
    algo = AlgoConfig(
        loss_agg=loss_agg,
        group_size=7,  # the batch of 28 rows: 4 groups, 2 per mini-batch (one per rank)
        num_minibatches=2,
        kl=KLConfig(coef=0.1),
        entropy_mask=EntropyMaskConfig(top_frac=0.5),
    )
    # Adam's eps=1 makes the step proportional to the gradient (see tests/test_learner.py)
    optim = OptimConfig(lr=1e-2, eps=1.0, max_grad_norm=1e9)
    learner_cfg = LearnerConfig(
        micro_batch_size=2, max_tokens_per_microbatch=120 if pack else None, pack=pack
    )
    learner = Learner(model, Accelerator(cpu=True), algo, optim, learner_cfg, 1.0, 10, max_new_tokens=8)
    # responses of 40-44 tokens: the per-token tensors outweigh what must cross ranks (counts, sums)
    whole = rollout_batch(tokenizer, n=28, seed=1, longer=40)
    batch, layout = rank_share(whole, algo)  # this rank's rows only
    received = dist.bytes_received()
    result = learner.update(batch, seed=0, layout=layout)
    received = dist.bytes_received() - received
    metrics = result.metrics
    entropy = result.entropy[batch.response_mask]
    stats = entropy_stats(entropy) if dist.world_size() == 1 else sharded_entropy_stats(entropy, 0.672)
    if dist.is_main():
        others = [r for r in range(len(whole)) if r not in layout.rows.tolist()]
        state = {k: v.detach().clone() for k, v in learner.unwrapped.state_dict().items()}
        torch.save(
            {
                "metrics": metrics,
                "state": state,
                "entropy": stats,
                "world": dist.world_size(),
                "rows": layout.rows.tolist(),
                "received": received,
                # what the other rank's rows weigh as the learner's tensors (ids, masks, sampler log-probs)
                "others_bytes": sum(
                    t[others].nbytes
                    for t in (whole.input_ids, whole.attention_mask, whole.response_mask, whole.rollout_logp)
                ),
            },
            out,
        )
    dist.shutdown()
    dist.exit_launched_rank()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] == "pack")
