#!/usr/bin/env bash
# The runs that a behaviour-preserving change must leave bit-identical (compare with scripts/same_metrics.py):
#   scripts/behaviour_runs.sh OUT_DIR [CHECKOUT]
# CHECKOUT (default: this repository) is put first on PYTHONPATH, so an older commit's worktree runs with this
# .venv. Runs: the quickstart for 20 steps; 2 processes (DDP, gloo) for 3 steps; 4 steps of each algo preset that
# the quickstart does not use (grpo, forking tokens, ProRL's KL with a reset, Clip-Cov, KL-Cov); user reward terms.
set -euo pipefail
OUT="$(realpath -m "$1")"
SRC="$(realpath "${2:-$(dirname "$0")/..}")"
HERE="$(realpath "$(dirname "$0")/..")"
BIN="$HERE/.venv/bin"
export PYTHONPATH="$SRC" RLVR_CACHE_DIR="${RLVR_CACHE_DIR:-$OUT/cache}" VLLM_ENABLE_V1_MULTIPROCESSING=0
mkdir -p "$OUT"
cd "$SRC"
# train NAME OVERRIDES...: one run into $OUT/NAME, its output in $OUT/NAME.log
train() {
  local name=$1; shift
  "$BIN/python" -m rlvr.train experiment=quickstart trainer.output_dir="$OUT/$name" trainer.progress_bar=false "$@" \
    > "$OUT/$name.log" 2>&1 || { echo "failed: $name $*"; tail -20 "$OUT/$name.log"; exit 1; }
}
short=(trainer.total_steps=4 eval.every=2 trainer.prompts_per_step=16 trainer.save_every=0)
[ "${SKIP_QUICKSTART:-0}" = 1 ] || train quickstart trainer.total_steps=20 trainer.save_every=0
for algo in grpo forking_tokens clip_cov kl_cov; do
  train "$algo" algo="$algo" "${short[@]}"
done
train prorl algo=prorl "${short[@]}" algo.kl.reset_every=2
train functions "${short[@]}" \
  '+reward.functions=[{name:math,fn:math},{name:concise,fn:docs/examples/reward_functions.py:concise,weight:0.2,kwargs:{max_chars:6}},{name:work,fn:docs/examples/reward_functions.py:shows_work,weight:0.1}]'
"$BIN/accelerate" launch --config_file "$SRC/configs/accelerate/ddp.yaml" --num_processes 2 --mixed_precision no \
  --main_process_port 29533 "$BIN/rlvr-train" experiment=quickstart trainer.output_dir="$OUT/two_process" \
  trainer.total_steps=3 eval.every=0 trainer.prompts_per_step=8 trainer.progress_bar=false > "$OUT/two_process.log" 2>&1 \
  || { echo "failed: two_process"; tail -20 "$OUT/two_process.log"; exit 1; }
echo "runs in $OUT"
