#!/usr/bin/env bash
# GPU learner benchmark: first the exactness checks on this device (benchmarks/gpu_exactness.py), then
# Learner.update throughput and MFU of Qwen2.5-0.5B- and 1.5B-shaped models (random init, no download) in bf16
# on one GPU, then benchmarks/logprob_memory.py. Exits non-zero when an exactness check failed. Needs torch
# (CUDA), transformers and accelerate; no vllm, no network. 270 s on one H100 (2026-11-27; docs/PERFORMANCE.md).
#
#   benchmarks/gpu_learner.sh [extra learner_throughput.py flags, which override the ones below]
#
# Environment: PYTHON (default .venv/bin/python if it exists, else python), DEVICE (default cuda), SHAPES
# (default qwen2.5-0.5b,qwen2.5-1.5b), LOGPROB_ARGS (logprob_memory.py's flags besides --device; default: bf16,
# Qwen2.5-0.5B's head, up to 65,536 response tokens = this preset's 64 x 1024). A quick check of the script's
# logic on CPU:
#
#   DEVICE=cpu SHAPES=tiny LOGPROB_ARGS="--vocab 512 --hidden 64 --tokens 256" benchmarks/gpu_learner.sh \
#       --seqs 4 --prompt-len 16 --response-len 32 --min-response-len 8 --max-tokens-per-microbatch 96 --repeats 1
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    PYTHON=python
    [[ -x .venv/bin/python ]] && PYTHON=.venv/bin/python
fi
DEVICE=${DEVICE:-cuda}
SHAPES=${SHAPES:-qwen2.5-0.5b,qwen2.5-1.5b}

run() {
    echo "+ $*"
    "$@"
}

echo "== exactness on this device: chunked vs full logits, packed vs padded (benchmarks/gpu_exactness.py)"
exact=0
run "$PYTHON" benchmarks/gpu_exactness.py --device "$DEVICE" || exact=$?

# 64 sequences = e.g. 8 prompts x G=8; 16,384-token micro-batches (10 rows of 1,536); activations checkpointed
common=(--device "$DEVICE" --dtype bfloat16 --shapes "$SHAPES" --seqs 64 --prompt-len 512 --response-len 1024
    --gradient-checkpointing --max-tokens-per-microbatch 16384 --repeats 3)

echo "== every response 1024 tokens (no padding)"
run "$PYTHON" benchmarks/learner_throughput.py "${common[@]}" "$@"
echo "== response lengths uniform in 128..1024: padded micro-batches, then packed"
run "$PYTHON" benchmarks/learner_throughput.py "${common[@]}" --min-response-len 128 "$@"
run "$PYTHON" benchmarks/learner_throughput.py "${common[@]}" --min-response-len 128 --pack "$@"

echo "== LM-head log-prob memory: chunked vs full logits"
# shellcheck disable=SC2086  # LOGPROB_ARGS is a list of flags
run "$PYTHON" benchmarks/logprob_memory.py --device "$DEVICE" ${LOGPROB_ARGS:---dtype bfloat16 --tokens 4096,16384,65536}
exit "$exact"
