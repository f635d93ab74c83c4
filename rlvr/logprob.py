"""Log-probabilities and entropies of tokens under a linear LM head, without a [tokens x vocab] tensor.

With a 150k vocabulary the logits of 16k response tokens take ~10 GB in float32, and autograd would keep
them (or their softmax) alive until backward. `chunked_logp_entropy` is an autograd Function that forms
the logits a chunk of tokens at a time, keeps only each token's log-sum-exp for backward, and recomputes a
chunk's logits there, so peak memory is a few [chunk x vocab] buffers whatever the token count.
`response_logp_entropy` (and `ResponseLogprobs`, the module that runs it) applies it to a causal LM's response
tokens: the logits are only ever formed for those.
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
    def forward(ctx, hidden, weight, labels, temperature, chunk_size, entropy_grad=False):
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
        ctx.temperature, ctx.chunk_size, ctx.dtype = temperature, chunk_size, dtype
        ctx.entropy_grad = entropy_grad
        if entropy_grad:
            ctx.save_for_backward(hidden, weight, labels, lse, entropy)
        else:
            ctx.save_for_backward(hidden, weight, labels, lse)
            ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        hidden, weight, labels, lse, *entropy = ctx.saved_tensors
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
                if ctx.entropy_grad:
                    g = _entropy_and_logp_grad(
                        _logits(h, w, t).sub_(lse[s:e, None]), gl, grad_entropy[s:e], entropy[0][s:e]
                    )
                else:
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
        return grad_hidden, grad_weight, None, None, None, None


def _entropy_and_logp_grad(logprobs: torch.Tensor, gl: torch.Tensor, ge: torch.Tensor, entropy: torch.Tensor):
    """d(gl * logp_label + ge * H) / d logits * T, without its one-hot term: logprobs [c, V] (overwritten), gl, ge,
    entropy [c]. With H = -sum_v p_v log p_v, dH/dlogit_v = -p_v (log p_v + H) and dlogp_label/dlogit_v =
    onehot - p_v, so the sum is -p_v (ge log p_v + gl + ge H) (+ gl at the label, which the caller adds). Two [c, V]
    buffers, as the forward."""
    p = logprobs.exp()
    return logprobs.mul_(ge[:, None]).add_((gl + ge * entropy)[:, None]).mul_(p).neg_()


def chunked_logp_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    chunk_size: int,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden [n, H], weight [V, H] (the LM head), labels [n] -> (logp [n], entropy [n]), float32, of the
    labels under softmax(hidden @ weight.T / temperature). logp has a gradient to hidden and weight; entropy
    has one only with `entropy_grad` (an entropy regulariser: algo.entropy_reg), which saves the [n] entropies
    too. Memory: `chunk_size` tokens' logits at a time, forward and backward, either way."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return _ChunkedLogpEntropy.apply(hidden, weight, labels, temperature, chunk_size, entropy_grad)


def plain_logp_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    chunk_size: int,
    entropy_grad: bool = False,
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
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy = -(logprobs.exp() * logprobs).sum(-1)
    return logp, entropy


def response_logp_entropy(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    response_mask: torch.Tensor,
    temperature: float,
    chunk_size: int,
    position_ids: torch.Tensor | None = None,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask, response_mask, position_ids: [n, L]. Returns (logp, entropy): [n, L] float32,
    aligned with input_ids, zero outside response_mask. Logits are scaled by 1/temperature, so logp is the
    log-probability under the sampling distribution. Gradient flows into logp, and into entropy only with
    `entropy_grad` (`chunked_logp_entropy`). Packed rows (`pack_rows`):
    attention_mask None and position_ids restarting at 0 for each sequence, from which transformers builds
    attention that keeps every sequence to itself."""
    body, head = model.get_decoder(), model.get_output_embeddings()
    # no KV cache: transformers only reads packed-sequence boundaries from position_ids when there is none
    out = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    hidden = out.last_hidden_state
    predicts = response_mask[:, 1:]  # hidden at t-1 predicts token t
    h = hidden[:, :-1][predicts]
    labels = input_ids[:, 1:][predicts]
    token_logp, token_entropy = chunked_logp_entropy(
        h, head.weight, labels, temperature, chunk_size, entropy_grad
    )
    logp = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    entropy = torch.zeros_like(logp)
    logp[:, 1:][predicts] = token_logp
    entropy[:, 1:][predicts] = token_entropy
    return logp, entropy


class ResponseLogprobs(torch.nn.Module):
    """A policy whose forward is `response_logp_entropy`: the whole computation, LM head included, runs inside
    one module call, which is what DDP (gradient all-reduce) and FSDP (unsharding the head and embeddings for
    the call) hook into."""

    def __init__(
        self, policy: torch.nn.Module, temperature: float, chunk_size: int, entropy_grad: bool = False
    ):
        super().__init__()
        self.policy = policy
        # the transformer blocks accelerate's FSDP auto-wrap shards one by one (else the whole model is one unit)
        self._no_split_modules = getattr(policy, "_no_split_modules", None)
        self.temperature = temperature
        self.chunk_size = chunk_size
        self.entropy_grad = entropy_grad  # an entropy regulariser's gradient (algo.entropy_reg)

    def forward(self, input_ids, attention_mask, response_mask, position_ids=None):
        return response_logp_entropy(
            self.policy,
            input_ids,
            attention_mask,
            response_mask,
            self.temperature,
            self.chunk_size,
            position_ids,
            self.entropy_grad,
        )
