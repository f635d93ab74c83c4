"""`rlvr-eval MODEL_OR_CHECKPOINT --data FILE [...]`: pass@k of a model or checkpoint on a dataset.

    rlvr-eval runs/quickstart/checkpoints/step_000200 --data .cache/rlvr/tiny-addition/eval.jsonl --k 1 4 --n 8

Prints one JSON object ({"eval/pass@1": ..., ...}) and writes it to --out if given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rlvr.config import DataConfig, RolloutConfig


def _model_dir(path: Path) -> Path:
    return path / "policy" if (path / "policy").is_dir() else path  # a checkpoint dir or a plain HF model dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rlvr-eval", description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="checkpoint dir (checkpoints/step_N) or Hugging Face model dir")
    p.add_argument("--data", nargs="+", required=True, help=".jsonl/.json/.parquet files or a datasets dir")
    p.add_argument("--k", type=int, nargs="+", default=[1])
    p.add_argument("--n", type=int, default=None, help="samples per prompt (default max k)")
    p.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--max-prompts", type=int, default=None)
    p.add_argument("--question-key", default="question")
    p.add_argument("--answer-key", default="answer")
    p.add_argument("--prompt-template", default="{question}")
    p.add_argument("--system-prompt", default=None)
    p.add_argument("--chat", action="store_true", help="apply the tokenizer's chat template")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout-s", type=float, default=5.0, help="verification time limit per sample")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlvr.data.prompts import DataError, encode_prompts, load_problems
    from rlvr.evaluate import evaluate_pass_at_k
    from rlvr.reward import MathVerifier
    from rlvr.rollout.base import SamplingParams

    n = args.n or max(args.k)
    if n < max(args.k):
        p.error(f"--n ({n}) must be >= max(--k) ({max(args.k)})")
    model_dir = _model_dir(args.model)
    if not (model_dir / "config.json").exists():
        p.error(f"{model_dir}: not a model directory (no config.json)")
    data_cfg = DataConfig(
        train_files=list(args.data),
        question_key=args.question_key,
        answer_key=args.answer_key,
        prompt_template=args.prompt_template,
        system_prompt=args.system_prompt,
        use_chat_template=args.chat,
    )
    try:
        problems = load_problems(args.data, data_cfg, "--data")[: args.max_prompts]
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        prompt_ids = encode_prompts(tokenizer, problems, data_cfg)
    except DataError as e:
        print(f"rlvr-eval: error: {e}", file=sys.stderr)
        return 2
    if args.backend == "hf":
        from rlvr.rollout.hf import HFRolloutEngine

        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
        engine = HFRolloutEngine(model, tokenizer)
    else:
        from rlvr.rollout.vllm_engine import VLLMRolloutEngine

        engine = VLLMRolloutEngine(str(model_dir), tokenizer, RolloutConfig(backend="vllm"), seed=args.seed)
    params = SamplingParams(args.temperature, args.top_p, 0, args.max_new_tokens)
    with MathVerifier(timeout_s=args.timeout_s) as verifier:
        result = evaluate_pass_at_k(
            engine, verifier, prompt_ids, [q.answer for q in problems], args.k, n, params, args.seed
        )
    engine.close()
    result["eval/prompts"] = len(problems)
    result["eval/n"] = n
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
