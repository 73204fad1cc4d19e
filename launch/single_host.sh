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

# --nomulti_process: one process even inside a multi-task SLURM allocation.
exec "${PYTHON:-python3}" -m define_jax.main --config "$config" --workdir "$workdir" \
  --nomulti_process "$@"
