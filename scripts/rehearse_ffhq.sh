#!/usr/bin/env bash
# The researcher's path, rehearsed on any machine (issue 34): a partial FFHQ download in FFHQ's
# layout -> prepare -> training with the final loss at 256² (configs/default.py) -> SIGKILL
# once a checkpoint is written -> the same command again, which resumes with no manual step.
#
#   scripts/rehearse_ffhq.sh FFHQ_DIR [OUT_DIR]
#
#   FFHQ_DIR  FFHQ's folder: images1024x1024/00000/00000.png ... (any subset, e.g. 10 files)
#   OUT_DIR   where the prepared dataset (tfds/) and the run (run/) go (default: a new
#             temporary directory); nothing is written into the repository
#
# PYTHON selects the interpreter (default python3); STEPS the steps of each run (default 4:
# the first run is killed after step 2's checkpoint, the second resumes and trains to STEPS).
# On a 2-core CPU each 256² step of batch 2 takes seconds and the first compile about a
# minute. tests/test_reliability.py runs the same path at 64² (and a lock left by another
# host, as after a Slurm requeue).

set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
  sed -n '2,16p' "$0" >&2
  exit 2
fi
ffhq_dir=$1
out_dir=${2:-$(mktemp -d)}
steps=${STEPS:-4}
python=${PYTHON:-python3}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
cd "$repo"

"$python" -m define_jax.datasets.prepare --dataset ffhq/256 --manual_dir "$ffhq_dir" \
  --data_dir "$out_dir/tfds"

train=("$python" -m define_jax.main --config configs/default.py --workdir "$out_dir/run"
  --config.input.data_dir="$out_dir/tfds" --config.optim.batch_size=2
  --config.optim.num_train_steps="$steps" --config.log.log_every_steps=1
  --config.log.checkpoint_every_steps=2 --config.eval.eval_every_steps="$steps"
  --config.eval.num_eval_images=2 --config.eval.image_every_steps=0)

echo "== First run, killed with SIGKILL after its first checkpoint"
"${train[@]}" &
pid=$!
until [[ -d $out_dir/run/checkpoints/2 ]]; do  # Step 2's checkpoint, complete.
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" || true
    echo "The first run ended before its first checkpoint." >&2
    exit 1
  fi
  sleep 2
done
kill -KILL "$pid"
wait "$pid" 2>/dev/null || true

echo "== The same command again"
"${train[@]}"
echo "Rehearsal done: $out_dir/run"
