"""FSDP2 and ZeRO-3: a learner over a policy sharded by accelerate's FSDP2 prepare or partitioned by DeepSpeed
ZeRO-3 (2 gloo processes, the shipped configs/accelerate/fsdp2.yaml and zero3.yaml) updates like one plain
process, and checkpoints hold the full state, keyed by parameter name, so they move between world sizes and
shardings.

The 2-process side is tests/dist/sharded_update.py (tests/dist/shard_on_cpu.py lets accelerate shard on CPU)."""

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
from helpers import assert_same_metrics, metrics_lines, train_cmd, train_env
from safetensors.torch import load_file
from test_distributed import SHARD_ON_CPU, assert_close_state, launch
from transformers import AutoModelForCausalLM

from rlvr import checkpoint

SCRIPT = Path(__file__).resolve().parent / "dist" / "sharded_update.py"


def _script():
    """tests/dist/sharded_update.py as a module: the 1-process side runs its code in this process."""
    spec = importlib.util.spec_from_file_location("sharded_update", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_close_adam(a: dict, b: dict, rel: float) -> None:
    """Two full optimizer states (`gather_full_state`): the same parameter names and hyperparameters, Adam's
    steps equal, its moments within `rel` (norm of the difference over the norm, per tensor). Sharded against
    one process they are held to 1e-4: a moment is a running mean of gradients, whose small elements carry
    their summation order's rounding (exp_avg measured 1.3e-6 apart under ZeRO-3); a missing or unreduced
    shard's moments are off by O(1)."""
    groups = [[{**g, "betas": tuple(g["betas"])} for g in s["param_groups"]] for s in (a, b)]
    assert groups[0] == groups[1]  # a loaded state may hold the betas as a list
    assert a["state"].keys() == b["state"].keys()
    for name, sa in a["state"].items():
        sb = b["state"][name]
        assert sa.keys() == sb.keys() == {"step", "exp_avg", "exp_avg_sq"}, name
        assert float(sa["step"]) == float(sb["step"]), name
        assert_close_state(
            {k: sa[k] for k in ("exp_avg", "exp_avg_sq")}, {k: sb[k] for k in sa if k != "step"}, rel
        )


@pytest.mark.parametrize("config,sharding", [("fsdp2.yaml", "FSDP2"), ("zero3.yaml", "ZeRO-3")])
def test_sharded_update_and_checkpoints_match_one_process(tmp_path, tokenizer, config, sharding):
    script = _script()
    one, metrics = script.one_update()
    assert not one.sharded
    weights, optimizer = checkpoint.gather_full_state(one.unwrapped, one.optimizer)
    saved = checkpoint.save_checkpoint(
        tmp_path / "one", 1, one.unwrapped, tokenizer, None, {"optimizer": optimizer}, 1, policy_state=weights
    )
    launch(2, str(SCRIPT), str(tmp_path), str(saved), config=config)
    two = torch.load(tmp_path / "two.pt", weights_only=False)
    sharded = tmp_path / "run" / "checkpoints" / "step_000001"

    # the update: the same numbers, and (gathered from the shards, saved as the trainer saves) the same weights
    assert (two["world"], two["sharding"], two["reference_sharded"]) == (2, sharding, True)
    for key in ("loss/policy", "kl/ref", "grad/norm", "learner/pg_token_frac"):
        # kl/ref (~6e-5) is a second-order quantity: with d = ref_logp - logp ~ 1e-2 and float32 log-probs of ~-5
        # (ulp 5e-7), k3 ~ d^2/2 carries ~1e-4 relative rounding: measured 3.8e-6 apart on an AMD EPYC
        rel = 1e-4 if key == "kl/ref" else 1e-5
        assert two["metrics"][key] == pytest.approx(metrics[key], rel=rel), key
    files = [load_file(d / "policy" / "model.safetensors") for d in (saved, sharded)]
    # same names too: the tied lm_head written once, as by 1 process; 1e-4 as in test_distributed (k_proj.bias)
    assert_close_state(*files, rel=1e-4)
    streamed = two["streamed"]  # what weight sync hands vLLM: every tensor gathered in full, tied lm_head too
    assert streamed["lm_head.weight"].equal(streamed["model.embed_tokens.weight"])
    assert_close_state({k: streamed[k] for k in files[1]}, files[1], rel=0.0)
    reset = {k: two["reference"][k] for k in files[1]}
    assert_close_state(reset, files[1], rel=0.0)  # the reference reset to the sharded policy, shard to shard
    # after a reset of the reference and of Adam's state, one more update: as in one process
    metrics_2, weights_2, optimizer_2 = script.after_reset(copy.deepcopy(one))
    sharded_metrics_2, sharded_weights_2, sharded_optimizer_2 = two["after_reset"]
    for key in ("loss/policy", "grad/norm"):
        assert sharded_metrics_2[key] == pytest.approx(metrics_2[key], rel=1e-5), key
    # just after a reset the KL is a small difference of nearly equal log-probs (7e-4 here): the weights'
    # rounding-level differences (~1e-6 relative) reach it ~30-fold: measured 9e-6 apart; a reference reset to
    # the wrong weights moves it by O(1)
    assert sharded_metrics_2["kl/ref"] == pytest.approx(metrics_2["kl/ref"], rel=1e-3)
    assert_close_state(weights_2, sharded_weights_2, rel=1e-4)
    assert float(next(iter(optimizer_2["state"].values()))["step"]) == 2  # restarted: 2 mini-batch steps
    assert_close_adam(optimizer_2, sharded_optimizer_2, rel=1e-4)

    # the sharded checkpoint resumes in one plain process: weights and Adam's state as the 1-process update's
    model = AutoModelForCausalLM.from_pretrained(sharded / "policy", dtype=torch.float32)
    plain = script.make_learner(model)
    plain.restore(checkpoint.load_state(sharded)["optimizer"], sharded / "policy")
    assert_close_state(weights, dict(plain.unwrapped.state_dict()), rel=1e-4)
    assert_close_adam(optimizer, checkpoint.gather_full_state(plain.unwrapped, plain.optimizer)[1], rel=1e-4)

    # and the 1-process checkpoint in a sharded learner: gathered again, the same state
    loaded = torch.load(tmp_path / "loaded.pt", weights_only=False)
    assert_close_state(weights, loaded["weights"], rel=0.0)
    assert_close_adam(optimizer, loaded["optimizer"], rel=0.0)
    base = script.build_model(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, seed=0)
    assert_close_state(base.state_dict(), loaded["reference"], rel=0.0)

    if (
        sharding == "FSDP2"
    ):  # accelerate 1.15's prepare with fsdp_cpu_ram_efficient_loading unties the embeddings
        assert "accelerate fsdp_cpu_ram_efficient_loading: the model ties" in two["refusal"]


def test_zero3_bf16_run_resumes_exactly(tiny_cache, tmp_path):
    """Under bf16 mixed precision ZeRO-3's module weights are bf16 copies of its fp32 masters: checkpoints hold
    the masters and resume loads them back, so step 3 restarted from the step-2 checkpoint gives the weights of
    3 straight steps bit for bit (with masters rebuilt from the bf16 module instead they were 1.7e-3 apart)."""
    common = (
        "rollout.backend=vllm",  # ZeRO-3 refuses the hf sampler (its forwards are collectives)
        "eval.every=0",
        "trainer.prompts_per_step=8",
        "trainer.progress_bar=false",
        "model.dtype=bfloat16",
    )

    def run(out, *overrides: str) -> None:
        cmd = train_cmd(out, *common, "trainer.total_steps=3", *overrides)
        cmd[0] = str(SHARD_ON_CPU)  # ZeRO-3 partitioning every parameter of the tiny model
        launch(2, *cmd, config="zero3.yaml", env=train_env(tiny_cache), cwd=tmp_path)

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(straight, "trainer.save_every=2")  # checkpoints at 2 and 3
    run(
        resumed, f"trainer.resume={straight / 'checkpoints' / 'step_000002'}"
    )  # step 3 again, after a restart
    assert "resumed from" in (resumed / "train.log").read_text()
    assert [m["step"] for m in metrics_lines(resumed)] == [3]
    assert_same_metrics(metrics_lines(resumed), metrics_lines(straight)[2:], abs_tol=0.0)
    files = [load_file(d / "checkpoints/step_000003/policy/model.safetensors") for d in (straight, resumed)]
    assert files[0]["model.embed_tokens.weight"].dtype == torch.float32
    assert_close_state(*files, rel=0.0)


def _adam(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-2, eps=1.0)


def _step(model, optimizer) -> None:
    model(torch.tensor([[1, 2, 3, 4]])).logits.square().mean().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def test_fresh_optimizer_is_saved_and_loaded_fresh(tiny_model):
    """torch.distributed.checkpoint learns an empty optimizer's layout by taking a zero-lr step: neither the
    save nor the load may leave that step counted (Adam's bias correction would differ from a fresh run's)."""
    model = copy.deepcopy(tiny_model)
    optimizer = _adam(model)
    _, state = checkpoint.gather_full_state(model, optimizer)
    assert state["state"] == {} and not optimizer.state
    assert state["param_groups"][0]["params"][0] == "model.embed_tokens.weight"  # keyed by name
    loaded_model = copy.deepcopy(tiny_model)
    loaded = _adam(loaded_model)
    checkpoint.load_optimizer_state(loaded_model, loaded, state)
    assert not loaded.state
    fresh_model = copy.deepcopy(tiny_model)
    _step(fresh_model, _adam(fresh_model))
    _step(loaded_model, loaded)
    assert_close_state(fresh_model.state_dict(), loaded_model.state_dict(), rel=0.0)


def test_checkpoint_from_before_named_state_still_loads(tiny_model):
    """state.pt files written before this change hold `optimizer.state_dict()`, keyed by position."""
    model = copy.deepcopy(tiny_model)
    optimizer = _adam(model)
    _step(model, optimizer)
    old = copy.deepcopy(optimizer.state_dict())
    assert isinstance(next(iter(old["state"])), int)
    restored = _adam(model)
    checkpoint.load_optimizer_state(model, restored, old)
    assert_close_adam(
        checkpoint.gather_full_state(model, optimizer)[1],
        checkpoint.gather_full_state(model, restored)[1],
        rel=0.0,
    )
