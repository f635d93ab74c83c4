"""`rlvr-eval MODEL --data FILE [...]` or `rlvr-eval MODEL --sets SET [...]`: pass@k of a model on held-out sets.

    rlvr-eval runs/quickstart/checkpoints/step_000200 --data .cache/rlvr/tiny-addition/eval.jsonl --k 1 4 --n 8
    rlvr-eval Qwen/Qwen2.5-Math-1.5B --backend vllm --sets aime24 math500 --out eval_out --gpu-memory-utilization 0.8

MODEL is a checkpoint dir (checkpoints/step_N), a Hugging Face model dir or a hub id. Each `--sets` item is a
preset of configs/eval/sets/ (the sets a run adds with +eval/sets=[...]) or a YAML file mapping set names to the
keys of the trainer's eval.sets.<name> (files or dataset, prompt_key, answer_key, answer_pattern, k, n,
temperature, top_p, max_new_tokens, ...); `--data` makes one set, named "data", from the options below. Prints
one JSON object ({"eval/<set>/pass@1": ..., "eval/pass@1": the mean over sets, ...}); with --out DIR it writes
DIR/results.json, DIR/<set>.json and every sample in DIR/<set>.samples.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rlvr.config import ConfigError, EvalSetConfig, RLVRConfig, RolloutConfig

# the trainer's eval set presets (+eval/sets=[NAME] in a run); configs/ sits beside the package (editable install)
SET_PRESETS = Path(__file__).resolve().parents[2] / "configs" / "eval" / "sets"


def _model_dir(model: str, revision: str | None) -> Path:
    """A checkpoint dir's policy, a plain HF model dir, or a hub id's local snapshot (rlvr.model_source)."""
    from rlvr.model_source import resolve_model

    path = Path(model)
    if path.is_dir():
        return path / "policy" if (path / "policy").is_dir() else path
    return Path(resolve_model(model, revision, "MODEL"))


# vLLM's sizing flags and their defaults: given on the command line, they choose --backend vllm
VLLM_FLAGS = {"gpu_memory_utilization": 0.3, "tensor_parallel_size": 1, "max_model_len": None}


class _EvalParser(argparse.ArgumentParser):
    """Parses as argparse does, then settles the backend: a vLLM flag implies --backend vllm, and is refused
    with --backend hf (which would ignore it)."""

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        ns = super().parse_args(args, namespace)
        given = [k for k in VLLM_FLAGS if getattr(ns, k) is not None]
        if given and ns.backend == "hf":
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            self.error(f"{flags}: vLLM's sizing, which --backend hf ignores; use --backend vllm or drop them")
        if ns.backend is None:
            ns.backend = "vllm" if given else "hf"
        for key, default in VLLM_FLAGS.items():
            if getattr(ns, key) is None:
                setattr(ns, key, default)
        return ns


def build_parser() -> argparse.ArgumentParser:
    p = _EvalParser(prog="rlvr-eval", description=__doc__.splitlines()[0])
    p.add_argument("model", help="checkpoint dir (checkpoints/step_N), Hugging Face model dir, or hub id")
    p.add_argument("--revision", default=None, help="a hub id's branch, tag or commit")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", nargs="+", help=".jsonl/.json/.parquet files or a datasets dir: one set")
    source.add_argument(
        "--sets", nargs="+", help="presets of configs/eval/sets (aime24, math500) or YAML files: name -> keys"
    )
    p.add_argument("--k", type=int, nargs="+", default=[1])
    p.add_argument("--n", type=int, default=None, help="samples per prompt (default max k)")
    p.add_argument(
        "--backend", choices=("hf", "vllm"), default=None, help="default hf; vllm when a vLLM flag is given"
    )
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--max-prompts", type=int, default=None)
    p.add_argument("--prompt-key", "--question-key", dest="prompt_key", default="question")
    p.add_argument("--answer-key", default="answer")
    p.add_argument(
        "--answer-pattern", default=None, help="regex whose first group is the gold (GSM8K: '####\\s*(.+)$')"
    )
    p.add_argument(
        "--prompt-template", default=None, help="str.format over the row (default: the prompt field)"
    )
    p.add_argument("--system-prompt", default=None)
    p.add_argument("--chat", action="store_true", help="apply the tokenizer's chat template")
    p.add_argument("--max-prompt-tokens", type=int, default=4096)
    p.add_argument("--gpu-memory-utilization", type=float, help="vLLM: share of GPU memory (default 0.3)")
    p.add_argument("--tensor-parallel-size", type=int, help="vLLM: GPUs per model (default 1)")
    p.add_argument("--max-model-len", type=int, help="vLLM: context length (default the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout-s", type=float, default=5.0, help="verification time limit per sample")
    p.add_argument("--out", type=Path, default=None, help="a directory for the results and the samples")
    return p


_parser = build_parser  # the former name (tests/test_byo.py)


def _config(args, model_dir: Path) -> RLVRConfig:
    """The trainer's config of these sets: the same reading, checking and sampling as eval.sets in a run."""
    from omegaconf import OmegaConf

    cfg = RLVRConfig()
    cfg.model.path = str(model_dir)
    d = cfg.data
    d.train_files = ["-"]  # unused: evaluation reads only the sets
    d.system_prompt, d.use_chat_template, d.max_prompt_tokens = (
        args.system_prompt,
        args.chat,
        args.max_prompt_tokens,
    )
    cfg.eval.k, cfg.eval.n, cfg.eval.temperature = list(args.k), args.n, args.temperature
    cfg.rollout = RolloutConfig(
        backend=args.backend, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
        gpu_memory_utilization=args.gpu_memory_utilization, tensor_parallel_size=args.tensor_parallel_size,
        max_model_len=args.max_model_len,
    )  # fmt: skip
    if args.sets is not None:
        sets = {}
        for source in args.sets:
            path = Path(source) if Path(source).is_file() else SET_PRESETS / f"{source}.yaml"
            if not path.is_file():
                presets = ", ".join(sorted(p.stem for p in SET_PRESETS.glob("*.yaml")))
                raise ConfigError("--sets", f"{source!r} is neither a YAML file nor a preset ({presets})")
            try:
                sets.update({
                    str(name): OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EvalSetConfig), node))
                    for name, node in OmegaConf.load(path).items()
                })  # fmt: skip
            except Exception as e:
                raise ConfigError("--sets", f"{path}: {str(e).splitlines()[0]}") from None
    else:
        sets = {"data": EvalSetConfig(
            files=list(args.data), prompt_key=args.prompt_key, answer_key=args.answer_key,
            answer_pattern=args.answer_pattern, prompt_template=args.prompt_template, max_prompts=args.max_prompts,
        )}  # fmt: skip
    cfg.eval.sets = sets
    return cfg


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    n = args.n or max(args.k)
    if n < max(args.k):
        p.error(f"--n ({n}) must be >= max(--k) ({max(args.k)})")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlvr import sharded_checkpoint
    from rlvr.data.prompts import DataError
    from rlvr.evaluate import build_eval_sets, evaluate_sets
    from rlvr.reward import MathVerifier

    try:
        model_dir = _model_dir(args.model, args.revision)
        if not (model_dir / "config.json").exists():
            merge = (
                f"; a sharded checkpoint: merge it first, rlvr-export {model_dir} OUT_DIR"
                if sharded_checkpoint.is_sharded(model_dir)
                else ""
            )
            raise ConfigError("MODEL", f"{model_dir}: not a model directory (no config.json){merge}")
        cfg = _config(args, model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        sets = build_eval_sets(cfg, tokenizer)
    except (DataError, ConfigError) as e:
        print(f"rlvr-eval: error: {e}", file=sys.stderr)
        return 2
    if args.backend == "hf":
        from rlvr.rollout.hf import HFRolloutEngine

        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
        engine = HFRolloutEngine(model, tokenizer)
    else:
        from rlvr.rollout.vllm_engine import VLLMRolloutEngine

        engine = VLLMRolloutEngine(str(model_dir), tokenizer, cfg.rollout, seed=args.seed)
    samples: dict[str, list[dict]] = {}
    with MathVerifier(timeout_s=args.timeout_s) as verifier:
        result = evaluate_sets(engine, verifier, sets, args.seed, samples)
    engine.close()
    for s in sets:
        result[f"eval/{s.name}/prompts"] = len(s.prompt_ids)
        result[f"eval/{s.name}/n"] = s.n
    if args.data is not None:  # one set: also under the plain names
        result["eval/prompts"], result["eval/n"] = len(sets[0].prompt_ids), sets[0].n
    print(json.dumps(result))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
        for s in sets:
            mine = {k: v for k, v in result.items() if k.startswith(f"eval/{s.name}/")}
            (args.out / f"{s.name}.json").write_text(json.dumps(mine, indent=2) + "\n")
            with (args.out / f"{s.name}.samples.jsonl").open("w", encoding="utf-8") as f:
                for row in samples.get(s.name, []):
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
