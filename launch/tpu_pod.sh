#!/usr/bin/env bash
# Trains on a Cloud TPU VM slice (a pod slice has several workers): creates the TPU VM or
# reuses it, copies this checkout to every worker, installs it there with jax[tpu], and starts
# the same training command on all workers in the background, one process per worker
# (jax.distributed.initialize() finds the other workers through the TPU metadata server).
# Then follows worker 0's log; Ctrl-C stops following, not training.
#
# Usage: launch/tpu_pod.sh TPU_NAME ZONE ACCELERATOR_TYPE CONFIG WORKDIR [OVERRIDE...]
#   TPU_NAME          the TPU VM to create or reuse, e.g. define-v4-32
#   ZONE              its zone, e.g. us-central2-b
#   ACCELERATOR_TYPE  the slice, e.g. v4-32 (4 workers × 4 chips) or v5p-16
#   CONFIG            training config file, relative to the repository root, e.g.
#                     configs/default.py
#   WORKDIR           gs://BUCKET/PATH (or a path every worker mounts) for checkpoints,
#                     TensorBoard logs and images; the TPU VM's service account must be able
#                     to write there. Running the same command again resumes from it.
#   OVERRIDE          further flags of define_jax.main, e.g. --config.optim.batch_size=64
#                     --config.input.data_dir=gs://BUCKET/tensorflow_datasets (data every worker reads)
#
# config.optim.batch_size is the global batch over all JAX devices of the slice (a multiple of
# their count: the chips, e.g. 16 on a v4-32, whose suffix counts TensorCores, two per chip;
# 16 on a v5e-16 or v6e-16; the cores on v2/v3). The script checks that before it creates or
# touches a TPU VM, e.g. the paper's batch of 6 needs --config.optim.batch_size=48 on a v4-32.
#
# Environment:
#   PROJECT          gcloud project (default: gcloud's configured project)
#   RUNTIME_VERSION  TPU software version for a new TPU VM (default: Google's recommendation
#                    for ACCELERATOR_TYPE: v2-alpha-tpuv6e, v2-alpha-tpuv5, v2-alpha-tpuv5-lite
#                    or tpu-ubuntu2204-base)
#   SPOT=1           create a Spot TPU VM; after a preemption, the same command deletes it,
#                    creates it again and resumes
#   FOLLOW=0         return after starting training instead of following the log
#
# Stop training with a checkpoint (SIGTERM on every worker):
#   gcloud compute tpus tpu-vm ssh TPU_NAME --zone=ZONE --worker=all \
#       --command='kill -TERM "$(cat ~/define_jax_train.pid)"'
set -euo pipefail

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
  exit 2
}
[[ $# -ge 5 ]] || usage
tpu_name=$1
zone=$2
accelerator_type=$3
config=$4
workdir=$5
shift 5

case $workdir in
  gs://* | /*) ;;
  *)
    echo "WORKDIR must be gs://BUCKET/PATH or an absolute path that every worker mounts" \
      "(a relative path would give every worker a directory of its own): $workdir" >&2
    exit 2
    ;;
esac

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# JAX devices of the slice: TensorCores / 2 where a chip has two (v4, v5p: megacore).
cores=${accelerator_type##*-}
if [[ ! $cores =~ ^[0-9]+$ ]]; then
  echo "ACCELERATOR_TYPE must be TYPE-SIZE, e.g. v4-32: $accelerator_type" >&2
  exit 2
fi
case $accelerator_type in
  v4-* | v5p-*) devices=$((cores / 2)) ;;
  *) devices=$cores ;;
esac
"${PYTHON:-python3}" "$repo_root/launch/check_batch.py" "$devices" "$repo_root/$config" "$@" ||
  exit 2

tpu_vm=(gcloud compute tpus tpu-vm)
where=(--zone="$zone")
if [[ -n ${PROJECT:-} ]]; then
  where+=(--project="$PROJECT")
fi

describe() {
  "${tpu_vm[@]}" describe "$tpu_name" "${where[@]}" --format="value($1)" 2>/dev/null
}

state=$(describe state || true)
if [[ $state == PREEMPTED ]]; then
  echo "TPU VM $tpu_name was preempted; deleting it to create it again."
  "${tpu_vm[@]}" delete "$tpu_name" "${where[@]}" --quiet
  state=
fi
if [[ -z $state ]]; then
  case $accelerator_type in
    v6e-*) default_runtime=v2-alpha-tpuv6e ;;
    v5p-*) default_runtime=v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) default_runtime=v2-alpha-tpuv5-lite ;;
    *) default_runtime=tpu-ubuntu2204-base ;;
  esac
  create_flags=(--accelerator-type="$accelerator_type"
                --version="${RUNTIME_VERSION:-$default_runtime}")
  if [[ ${SPOT:-0} == 1 ]]; then
    create_flags+=(--spot)
  fi
  "${tpu_vm[@]}" create "$tpu_name" "${where[@]}" "${create_flags[@]}"
elif [[ $state != READY ]]; then
  echo "TPU VM $tpu_name is $state, not READY." >&2
  exit 1
elif [[ $(describe acceleratorType) != "$accelerator_type" ]]; then
  echo "TPU VM $tpu_name is a $(describe acceleratorType), not a $accelerator_type." >&2
  exit 1
fi

# This checkout's files (tracked and new, not ignored ones such as .venv or runs/).
archive=$(mktemp --suffix=.tar.gz)
trap 'rm -f "$archive"' EXIT
git -C "$repo_root" ls-files -z --cached --others --exclude-standard |
  tar -C "$repo_root" --null -T - -czf "$archive"
"${tpu_vm[@]}" scp "$archive" "$tpu_name":define_jax.tar.gz --worker=all "${where[@]}"

# The TPU images ship Python 3.10; define_jax's JAX needs 3.11+, which uv provides.
# shellcheck disable=SC2016  # $HOME expands on the workers.
install='set -eu
pid_file="$HOME/define_jax_train.pid"
if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
  echo "define_jax is still training on $(hostname); stop it first." >&2
  exit 1
fi
rm -rf "$HOME/define_jax" && mkdir -p "$HOME/define_jax"
tar -xzf "$HOME/define_jax.tar.gz" -C "$HOME/define_jax"
if [ ! -x "$HOME/define_jax_venv/bin/python" ]; then
  python3 -m pip install --user --quiet uv
  "$HOME/.local/bin/uv" venv --python 3.11 "$HOME/define_jax_venv"
fi
"$HOME/.local/bin/uv" pip install --quiet --python "$HOME/define_jax_venv/bin/python" \
  -e "$HOME/define_jax" "jax[tpu]"'
"${tpu_vm[@]}" ssh "$tpu_name" "${where[@]}" --worker=all --command="$install"

printf -v train_flags ' %q' --config "$config" --workdir "$workdir" --multi_process "$@"
# shellcheck disable=SC2016  # $HOME expands on the workers.
start='cd "$HOME/define_jax"
PYTHONPATH=. nohup "$HOME/define_jax_venv/bin/python" -m define_jax.main'"$train_flags"' \
  >"$HOME/define_jax_train.log" 2>&1 </dev/null &
echo $! >"$HOME/define_jax_train.pid"'
"${tpu_vm[@]}" ssh "$tpu_name" "${where[@]}" --worker=all --command="$start"

echo "Training started on all workers of $tpu_name; each logs to ~/define_jax_train.log."
if [[ ${FOLLOW:-1} == 1 ]]; then
  # shellcheck disable=SC2016  # $HOME expands on the worker.
  "${tpu_vm[@]}" ssh "$tpu_name" "${where[@]}" --worker=0 \
    --command='tail -n +1 -F "$HOME/define_jax_train.log"'
fi
