"""Build the embedded default: tokenizer, warm-started tiny Qwen2 model and addition data splits.

python scripts/build_tiny_model.py --out .cache/rlvr/tiny-addition [--sft-steps 3000]
"""

import argparse

from rlvr.tiny_model import build_tiny_assets

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".cache/rlvr/tiny-addition")
    parser.add_argument("--sft-steps", type=int, default=3000)
    parser.add_argument("--p-correct", type=float, default=0.35)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path = build_tiny_assets(args.out, args.sft_steps, args.p_correct, args.seed)
    print(path)
    print((path.parent / "build.json").read_text())
