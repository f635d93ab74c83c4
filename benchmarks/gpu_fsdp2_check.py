"""accelerate's real FSDP2 `prepare` with rlvr's learner on a GPU: one update of the tiny model with
tests/dist/update_once.py's settings (2 mini-batches, KL to a reference, the 80/20 entropy mask), sharded by
accelerate (configs/accelerate/fsdp2.yaml), against the same update in one plain process; then the plain
run's checkpoint state loaded into a fresh FSDP2 learner. The CPU tests (tests/test_sharded.py) run the same
accelerate path on CPU (tests/dist/shard_on_cpu.py); this checks it on a GPU, with CUDA and NCCL.

    python benchmarks/gpu_fsdp2_check.py OUT_DIR plain
    accelerate launch --config_file configs/accelerate/fsdp2.yaml --num_processes 1 --mixed_precision no \\
        benchmarks/gpu_fsdp2_check.py OUT_DIR fsdp2      # reads OUT_DIR/plain.pt, exits 1 on a mismatch

float32 throughout (TF32 off, torch's default), bound 1e-5 relative per tensor. Needs torch (CUDA),
transformers and accelerate; no vllm, no network.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from accelerate import Accelerator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "dist"))
from helpers import rollout_batch  # noqa: E402
from sharded_update import settings  # noqa: E402

from rlvr import checkpoint  # noqa: E402
from rlvr import distributed as dist  # noqa: E402
from rlvr.config import LearnerConfig  # noqa: E402
from rlvr.learner import Learner  # noqa: E402
from rlvr.tiny_model import build_model, build_tokenizer  # noqa: E402


def make_learner() -> Learner:
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed=0)
    algo, optim = settings()
    return Learner(model, Accelerator(), algo, optim, LearnerConfig(micro_batch_size=2), 1.0, 10)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a = (
        a.full_tensor() if hasattr(a, "full_tensor") else a
    )  # a DTensor that should not be there: still compare
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12)).item()


def worst(a: dict, b: dict) -> tuple[float, str]:
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    return max((rel(a[k], b[k]), k) for k in a)


def worst_adam(a: dict, b: dict) -> float:
    assert a["state"].keys() == b["state"].keys()
    return max(rel(a["state"][n][k], b["state"][n][k]) for n in a["state"] for k in ("exp_avg", "exp_avg_sq"))


def main(out: Path, mode: str) -> int:
    learner = make_learner()
    tokenizer = build_tokenizer()
    metrics = learner.update(rollout_batch(tokenizer, n=14, seed=1), seed=0).metrics
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.tensor import DTensor

    raw = get_model_state_dict(
        learner.unwrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    raw_dtensors = sum(isinstance(v, DTensor) for v in raw.values())
    weights, optimizer = checkpoint.gather_full_state(learner.unwrapped, learner.optimizer)
    left = sum(isinstance(v, DTensor) for v in weights.values()) + sum(
        isinstance(t, DTensor) for st in optimizer["state"].values() for t in st.values()
    )
    print(
        f"{mode}: torch's full state dict held {raw_dtensors} DTensors of {len(raw)}; gather_full_state: {left}"
    )
    print(
        f"{mode}: distributed_type={learner.accelerator.distributed_type} sharded={learner.sharded} "
        f"loss/policy={metrics['loss/policy']:.8f} grad/norm={metrics['grad/norm']:.8f}"
    )
    if mode == "plain":
        torch.save({"metrics": metrics, "weights": weights, "optimizer": optimizer}, out / "plain.pt")
        return 0
    plain = torch.load(out / "plain.pt", weights_only=False)
    rows = [
        ("sharded by accelerate (DTensor parameters)", float(not learner.sharded), 0.5),
        ("DTensors left in the gathered state", float(left), 0.5),
        ("loss/policy", abs(metrics["loss/policy"] / plain["metrics"]["loss/policy"] - 1), 1e-5),
        ("grad/norm", abs(metrics["grad/norm"] / plain["metrics"]["grad/norm"] - 1), 1e-5),
        ("kl/ref", abs(metrics["kl/ref"] / plain["metrics"]["kl/ref"] - 1), 1e-5),
        ("updated weights (worst tensor)", worst(weights, plain["weights"])[0], 1e-5),
        ("Adam moments (worst tensor)", worst_adam(optimizer, plain["optimizer"]), 1e-5),
    ]
    # the plain run's checkpoint state into a fresh FSDP2 learner, as a resume does
    fresh = make_learner()
    checkpoint.load_optimizer_state(fresh.unwrapped, fresh.optimizer, plain["optimizer"])
    checkpoint.load_full_state(fresh.unwrapped, plain["weights"])
    w2, o2 = checkpoint.gather_full_state(fresh.unwrapped, fresh.optimizer)
    rows += [
        ("plain checkpoint loaded into FSDP2: weights", worst(w2, plain["weights"])[0], 1e-6),
        ("plain checkpoint loaded into FSDP2: Adam", worst_adam(o2, plain["optimizer"]), 1e-6),
    ]
    for name, value, bound in rows:
        print(f"{name:<50} {value:9.2e}  bound {bound:7.0e}  {'ok' if value < bound else 'FAIL'}")
    dist.shutdown()
    return 0 if all(value < bound for _, value, bound in rows) else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))
