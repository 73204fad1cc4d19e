#!/usr/bin/env bash
# Trains on all GPUs of this machine with one process (jax.pmap over the local devices).
#
# Usage: launch/single_host.sh CONFIG WORKDIR [OVERRIDE...]
#   CONFIG    training config file, e.g. configs/default.py
#   WORKDIR   directory (or gs://BUCKET/PATH) for checkpoints, TensorBoard logs and images;
#             running the same command again resumes from the newest checkpoint in it
#   OVERRIDE  further flags of define_jax.main, e.g. --config.optim.batch_size=48
#
# config.optim.batch_size is the global batch: a multiple of the number of GPUs, split evenly.
# The script checks that before it starts. Without CUDA_VISIBLE_DEVICES it trains on all
# GPUs, or, when the batch does not split over them (the paper's 6 on 4 or 8 GPUs), on the
# most GPUs it splits over (says which); a CUDA_VISIBLE_DEVICES the batch does not split over
# is refused.
#
# Environment:
#   PYTHON                          Python with define_jax installed (default: python3)
#   CUDA_VISIBLE_DEVICES            the GPUs to train on (default: all)
#   XLA_PYTHON_CLIENT_MEM_FRACTION  share of each GPU's memory JAX reserves (default here:
#                                   0.90 instead of JAX's 0.75: TensorFlow stays off the GPUs)
set -euo pipefail

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
  exit 2
}
[[ $# -ge 2 ]] || usage
config=$1
workdir=$2
shift 2

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# configs/ is not part of the installed package; CONFIG and WORKDIR keep meaning what they
# mean in the caller's directory.
export PYTHONPATH="${repo_root}${PYTHONPATH:+:${PYTHONPATH}}"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"
python=${PYTHON:-python3}
# check_batch DEVICES FLAG...: exit status 2 (and why) if the batch does not split over them.
check_batch() {
  local devices=$1
  shift
  "$python" "$repo_root/launch/check_batch.py" "$devices" "$config" "$@"
}

if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
  IFS=, read -ra visible <<<"$CUDA_VISIBLE_DEVICES"
  check_batch "${#visible[@]}" "$@" || exit 2
elif gpus=$(nvidia-smi --list-gpus 2>/dev/null | grep -c '^GPU') && ((gpus > 0)); then
  used=$gpus
  while ((used > 1)) && ! check_batch "$used" "$@" 2>/dev/null; do used=$((used - 1)); done
  check_batch "$used" "$@" || exit 2  # A config that does not load is named here.
  if ((used < gpus)); then
    echo "The batch does not split over this machine's $gpus GPUs: training on GPUs" \
      "0-$((used - 1)); set CUDA_VISIBLE_DEVICES or --config.optim.batch_size to choose." >&2
    CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((used - 1)))
    export CUDA_VISIBLE_DEVICES
  fi
fi

# --nomulti_process: one process even inside a multi-task SLURM allocation.
exec "$python" -m define_jax.main --config "$config" --workdir "$workdir" \
  --nomulti_process "$@"
