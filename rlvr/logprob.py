"""Log-probabilities and entropies of tokens under a linear LM head, without a [tokens x vocab] tensor.

With a 150k vocabulary the logits of 16k response tokens take ~10 GB in float32, and autograd would keep
them (or their softmax) alive until backward. `chunked_logp_entropy` is an autograd Function that forms
the logits a chunk of tokens at a time, keeps only each token's log-sum-exp for backward, and recomputes a
chunk's logits there, so peak memory is a few [chunk x vocab] buffers whatever the token count.
"""

from __future__ import annotations

import torch


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype of the head's matmul: autocast's when it is on (as the model's own layers would use),
    else the inputs' common dtype. The softmax math is always float32."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _logits(h: torch.Tensor, w: torch.Tensor, temperature: float) -> torch.Tensor:
    """[c, V] float32 logits / temperature: a fresh tensor, which callers modify in place."""
    return (h @ w.T).float().div_(temperature)


class _ChunkedLogpEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, temperature, chunk_size):
        dtype = _compute_dtype(hidden, weight)
        n = hidden.shape[0]
        logp = torch.empty(n, dtype=torch.float32, device=hidden.device)
        entropy = torch.empty_like(logp)
        lse = torch.empty_like(logp)
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(dtype)
            for s in range(0, n, chunk_size):
                e = min(s + chunk_size, n)
                logits = _logits(hidden[s:e].to(dtype), w, temperature)
                lse[s:e] = logits.logsumexp(-1)
                logprobs = logits.sub_(lse[s:e, None])  # in place: at most two [c, V] buffers at a time
                logp[s:e] = logprobs.gather(-1, labels[s:e, None]).squeeze(-1)
                # -sum_v p_v log p_v, formed in place in a second buffer. torch's sum reduces pairwise; a batched
                # dot product (the same two buffers) summed 150k terms in order on CPU, 1e-5 off in float32
                entropy[s:e] = logprobs.exp().mul_(logprobs).sum(-1).neg_()
                del logits, logprobs  # else they live on while the next chunk's logits are allocated
        ctx.save_for_backward(hidden, weight, labels, lse)
        ctx.temperature, ctx.chunk_size, ctx.dtype = temperature, chunk_size, dtype
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, _grad_entropy):
        hidden, weight, labels, lse = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[:2]
        t, dtype = ctx.temperature, ctx.dtype
        grad_hidden = torch.empty_like(hidden) if need_h else None
        # summed over chunks in float32 whatever the weight's dtype, then cast once
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(dtype)
            for s in range(0, hidden.shape[0], ctx.chunk_size):
                e = min(s + ctx.chunk_size, hidden.shape[0])
                h = hidden[s:e].to(dtype)
                # d logp / d logits = grad * (onehot(label) - softmax) / T, built in place in the logits buffer
                gl = grad_logp[s:e]
                g = _logits(h, w, t).sub_(lse[s:e, None]).exp_().mul_(-gl[:, None])
                g[torch.arange(e - s, device=g.device), labels[s:e]] += gl
                g = g.div_(t).to(dtype)
                if need_h:
                    grad_hidden[s:e] = g @ w
                if need_w and dtype == torch.float32:
                    grad_weight.addmm_(g.T, h)  # no [V, H] temporary
                elif need_w:
                    grad_weight += (g.T @ h).float()
                del g  # else it lives on while the next chunk's logits are allocated
        if need_w:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None


def chunked_logp_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, temperature: float, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden [n, H], weight [V, H] (the LM head), labels [n] -> (logp [n], entropy [n]), float32, of the
    labels under softmax(hidden @ weight.T / temperature). logp has a gradient to hidden and weight; entropy
    has none. Memory: `chunk_size` tokens' logits at a time, forward and backward."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return _ChunkedLogpEntropy.apply(hidden, weight, labels, temperature, chunk_size)


def plain_logp_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, temperature: float, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for `chunked_logp_entropy` (same signature; chunk_size is ignored): all [n, V] logits at
    once, differentiated by autograd, which keeps them for backward. Float32 math, or float64 for float64
    inputs."""
    logits = hidden @ weight.T
    logits = (
        logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    )  # float64 stays float64
    logprobs = logits.log_softmax(-1)
    logp = logprobs.gather(-1, labels[:, None]).squeeze(-1)
    with torch.no_grad():
        entropy = -(logprobs.exp() * logprobs).sum(-1)
    return logp, entropy
