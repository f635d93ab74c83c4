"""DeepSpeed ZeRO-3 (through `accelerate launch --config_file configs/accelerate/zero3.yaml`): what the learner,
checkpoints and weight sync need beyond accelerate's own handling.

Under ZeRO-3 each parameter holds only this rank's partition (its `.data` is empty; `ds_shape` is the full
shape); DeepSpeed's hooks gather the parameters around every forward and backward, a collective every rank
must join. The optimizer state lives in flat fp32 partitions inside DeepSpeed's ZeRO optimizer. The functions
here read and write full tensors, one parameter at a time, so that checkpoints hold the same full weights and
name-keyed Adam state as under DDP or FSDP2 (`rlvr.checkpoint`), and move between world sizes and sharders.
Every function is a collective: all ranks call it, in the same order.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from rlvr import distributed as dist


def is_zero3(model: torch.nn.Module) -> bool:
    """Whether DeepSpeed ZeRO-3 has partitioned the module's parameters."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def configure(accelerator, max_grad_norm: float) -> None:
    """Set the DeepSpeed config entries that rlvr's learner owns, before `accelerator.prepare`.

    The learner forms its own micro-batches (no dataloader) and marks the last backward of each mini-batch as
    the optimizer step (`accelerator.sync_gradients`), so DeepSpeed accumulates over one "step" of size 1 and
    never rescales the loss; DeepSpeed clips the gradient inside its step, so its clipping is optim.max_grad_norm.
    """
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = 1
    config["gradient_accumulation_steps"] = 1
    config["train_batch_size"] = accelerator.num_processes
    config["gradient_clipping"] = max_grad_norm


def full_tensors(model: torch.nn.Module, masters: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor) for every entry of `model.state_dict()` (a tied weight under each of its names),
    each parameter gathered from the partitions just before it is yielded and released after: at most one
    full parameter beyond the partitions exists at a time. The tensor is a copy the caller may keep.

    `masters`: the optimizer's fp32 master weights instead of the module's (bf16 under mixed precision): what
    checkpoints must hold for training to go on exactly."""
    from deepspeed.runtime.zero import GatheredParameters
    from deepspeed.utils import safe_get_full_fp32_param

    for name, tensor in model.state_dict(keep_vars=True).items():
        if not hasattr(tensor, "ds_id"):
            yield name, tensor.detach()
        elif masters:
            yield name, safe_get_full_fp32_param(tensor)
        else:
            with GatheredParameters([tensor], modifier_rank=None):
                full = tensor.detach().clone()
            yield name, full


def full_shape(tensor: torch.Tensor) -> tuple[int, ...]:
    """A parameter's full shape, partitioned or not."""
    return tuple(getattr(tensor, "ds_shape", tensor.shape))


def _zero_optimizer(model: torch.nn.Module):
    """DeepSpeed's ZeRO-3 optimizer over the model's parameters, and the torch optimizer inside it."""
    zero = next(p for p in model.parameters() if hasattr(p, "ds_id"))._z3_optimizer
    return zero, zero.optimizer


def _named_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """Each parameter once, under its first name (a tied weight under the input embedding's name), as torch's
    full optimizer state dicts name them."""
    return list(model.named_parameters())


def gather_full_state(
    model: torch.nn.Module, with_optimizer: bool
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """`rlvr.checkpoint.gather_full_state` under ZeRO-3: the full fp32 master weights (the module's own may be
    bf16 copies of them) and Adam's state by parameter name, on rank 0 (CPU); empty on the other ranks.
    `with_optimizer`: the optimizer's state too (`model` is then the policy DeepSpeed prepared with it; without
    an optimizer, e.g. the KL reference, there are no masters: the module's weights)."""
    main = dist.is_main()
    weights: dict[str, torch.Tensor] = {}
    first: dict[int, str] = {}
    params = dict(model.state_dict(keep_vars=True))
    for name, tensor in full_tensors(model, masters=with_optimizer):
        key = id(params[name])
        if main:
            # a tied weight: one tensor under both names, which save_pretrained then writes once
            weights[name] = weights[first[key]] if key in first else tensor.cpu()
        first.setdefault(key, name)
    if not with_optimizer:
        return weights, None
    return weights, _gather_optimizer(model, main)


def _gather_optimizer(model: torch.nn.Module, main: bool) -> dict[str, Any]:
    from deepspeed.utils import safe_get_full_optimizer_state

    zero, inner = _zero_optimizer(model)
    named = _named_parameters(model)
    groups = _param_groups(zero, inner, named)
    if not inner.state:  # fresh: nothing to gather
        return {"state": {}, "param_groups": groups}
    some = next(iter(inner.state.values()))
    moments = [k for k in some if k != "step"]
    step = float(some["step"])
    state = {}
    for name, param in named:
        entry = {k: safe_get_full_optimizer_state(param, k) for k in moments}
        if main:
            state[name] = {"step": torch.tensor(step), **{k: v.cpu() for k, v in entry.items()}}
    return {"state": state, "param_groups": groups} if main else {}


def _param_groups(zero, inner, named) -> list[dict[str, Any]]:
    """The torch optimizer's groups with parameter names in place of the flat partitions DeepSpeed gave it."""
    names = {id(p): n for n, p in named}
    return [
        {**{k: v for k, v in group.items() if k != "params"}, "params": [names[id(p)] for p in params]}
        for group, params in zip(inner.param_groups, zero.fp16_groups)
    ]


def load_optimizer_state(model: torch.nn.Module, state: dict[str, Any]) -> None:
    """Load a full, name-keyed optimizer state (`gather_full_state`'s, from any world size or sharding) into
    ZeRO-3's partitions; every rank passes the whole state (the trainer reads state.pt on every rank) and keeps
    its part."""
    from deepspeed.utils import safe_set_full_optimizer_state

    zero, inner = _zero_optimizer(model)
    for group, saved in zip(inner.param_groups, state["param_groups"]):
        group.update({k: v for k, v in saved.items() if k != "params"})
    if not state["state"]:
        inner.state.clear()
        return
    some = next(iter(state["state"].values()))
    moments = [k for k in some if k != "step"]
    # torch's Adam creates its state at its first step: create it (with the saved step) to fill it in
    for flat in zero.fp32_partitioned_groups_flat:
        inner.state[flat] = {
            "step": torch.tensor(float(some["step"])),
            **{k: torch.zeros_like(flat) for k in moments},
        }
    for name, param in _named_parameters(model):
        for k in moments:
            safe_set_full_optimizer_state(param, state["state"][name][k], k)


def load_master_weights(model: torch.nn.Module, checkpoint_dir: Path) -> None:
    """Set the optimizer's fp32 master weights from a Hugging Face checkpoint dir's safetensors, one tensor at a
    time. On resume: DeepSpeed makes its masters from the module's weights, which under bf16 mixed precision
    are rounded copies of the saved ones."""
    from deepspeed.utils import safe_set_full_fp32_param
    from safetensors import safe_open

    named = dict(model.named_parameters())
    for file in sorted(Path(checkpoint_dir).glob("*.safetensors")):
        with safe_open(file, "pt") as f:
            for key in f.keys():  # noqa: SIM118 (a safetensors file handle, not a dict)
                if key in named:
                    safe_set_full_fp32_param(named[key], f.get_tensor(key))


def whole_copy(model: torch.nn.Module) -> torch.nn.Module:
    """An ordinary (unpartitioned) copy of a partitioned transformers model. Under an active ZeRO-3 config
    transformers' `from_pretrained` loads a model already partitioned (`zero.Init`), which cannot be
    deep-copied: the learner copies the KL reference this way, then partitions it (`partition_frozen`)."""
    whole = type(model)(model.config)
    own = whole.state_dict()
    with torch.no_grad():
        for name, tensor in full_tensors(model):
            own[name].copy_(tensor)
    return whole


def partition_frozen(module: torch.nn.Module, accelerator) -> torch.nn.Module:
    """`module` (frozen, no optimizer: the KL reference) partitioned by a DeepSpeed engine of its own with the
    policy's ZeRO-3 config, so that no rank holds it whole; returns the engine, whose forward gathers the
    parameters as the policy's does. (accelerate's `prepare` would replace the policy's engine, which its
    `backward` uses.)"""
    import deepspeed

    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    for key in ("optimizer", "scheduler"):
        config.pop(key, None)
    engine, *_ = deepspeed.initialize(model=module, config=config)
    engine.eval()
    return engine


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Full weights (every rank passes the same) into a partitioned module without an optimizer (the KL
    reference, on resume)."""
    _overwrite(model, weights.items())


def copy_weights(model: torch.nn.Module, target: torch.nn.Module) -> None:
    """The partitioned policy's weights into the partitioned reference (a ProRL reset)."""
    _overwrite(target, full_tensors(model))


def _overwrite(model: torch.nn.Module, items: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Set `model`'s state_dict entries from (name, full tensor) pairs, one parameter at a time: gathered,
    overwritten on rank 0 and partitioned again from rank 0's copy."""
    from deepspeed.runtime.zero import GatheredParameters

    own = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for name, tensor in items:
            param = own[name]
            if not hasattr(param, "ds_id"):
                param.copy_(tensor)
                continue
            with GatheredParameters([param], modifier_rank=0):
                if dist.is_main():
                    param.copy_(tensor)
