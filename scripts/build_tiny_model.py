"""Build the embedded default: tokenizer, warm-started tiny Qwen2 model and addition data splits.

python scripts/build_tiny_model.py [--out $RLVR_CACHE_DIR/tiny-addition] [--target-accuracy 0.2]
python scripts/build_tiny_model.py --ship    # rebuild the copy shipped in rlvr/assets (model + build.json)

The trainer installs the shipped copy on first use; a build of your own replaces it in the cache until the
recipe changes (rlvr.tiny_model.RECIPE).
"""

import argparse
import os

from rlvr.tiny_model import SHIPPED, TARGET_ACCURACY, build_tiny_assets

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=os.path.join(os.environ.get("RLVR_CACHE_DIR", ".cache/rlvr"), "tiny-addition")
    )
    parser.add_argument("--ship", action="store_true", help=f"write the model and build.json into {SHIPPED}")
    parser.add_argument("--target-accuracy", type=float, default=TARGET_ACCURACY)
    parser.add_argument("--max-sft-steps", type=int, default=10_000)
    parser.add_argument("--p-correct", type=float, default=0.35)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = SHIPPED if args.ship else args.out
    path = build_tiny_assets(
        out, args.max_sft_steps, args.target_accuracy, args.p_correct, args.seed, data=not args.ship
    )
    print(path)
    print((path.parent / "build.json").read_text())
