"""Entry point: python -m define_jax.main --config configs/NAME.py --workdir DIR.

Multi-process runs (several GPU hosts, TPU pods; see launch/) start one such process per
host, which calls jax.distributed.initialize() (see --multi_process). It finds the other
processes in SLURM's or Cloud TPU's environment; elsewhere set JAX_COORDINATOR_ADDRESS
(host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID on every process.
"""

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import jax
import tensorflow as tf

from define_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and images.')
config_flags.DEFINE_config_file(
    'config', None, 'Training configuration file.', lock_config=True)
flags.DEFINE_bool(
    'multi_process', None,
    'Call jax.distributed.initialize(). Default: on when JAX_COORDINATOR_ADDRESS or '
    'TPU_WORKER_HOSTNAMES (GKE) is set or the SLURM step has several tasks; pass it on Cloud '
    'TPU VM pods, where the cluster is only visible through the metadata server.')
flags.mark_flags_as_required(['config', 'workdir'])


def multi_process_environment() -> bool:
  """True in a launch that starts one process per host (a SLURM job counts only when it runs
  several tasks: a one-task job, e.g. launch/single_host.sh in an allocation, keeps all GPUs)."""
  return bool(os.environ.get('JAX_COORDINATOR_ADDRESS') or
              os.environ.get('TPU_WORKER_HOSTNAMES') or
              int(os.environ.get('SLURM_NTASKS', '1')) > 1)


def process_arguments_from_environment() -> dict[str, int]:
  """num_processes / process_id from JAX_NUM_PROCESSES / JAX_PROCESS_ID, which
  jax.distributed.initialize() does not read itself (it reads JAX_COORDINATOR_ADDRESS)."""
  names = {'num_processes': 'JAX_NUM_PROCESSES', 'process_id': 'JAX_PROCESS_ID'}
  return {argument: int(os.environ[name]) for argument, name in names.items()
          if os.environ.get(name)}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # tf.data only feeds the host; JAX owns the accelerators.
  tf.config.set_visible_devices([], 'GPU')
  multi_process = FLAGS.multi_process
  if multi_process is None:
    multi_process = multi_process_environment()
  if multi_process:
    jax.distributed.initialize(**process_arguments_from_environment())
  logging.info('JAX process %d/%d, local devices: %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  state = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  # Identical on every process of a run: the replicas never diverge.
  logging.info('Final parameter checksum (process %d, step %d): %s', jax.process_index(),
               int(state.step), train.parameter_fingerprint(
                   {'params': state.params, 'batch_stats': state.batch_stats}))


if __name__ == '__main__':
  app.run(main)
