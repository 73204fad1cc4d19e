"""Entry point: python -m define_jax.main --config configs/NAME.py --workdir DIR.

Multi-process runs (several GPU hosts, TPU pods) call jax.distributed.initialize(), which
reads the cluster from the environment (SLURM, Cloud TPU) or from JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID.
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
flags.mark_flags_as_required(['config', 'workdir'])

# Environment variables that mean "this is one process of several".
MULTI_PROCESS_ENV = ('JAX_COORDINATOR_ADDRESS', 'SLURM_JOB_ID', 'TPU_WORKER_HOSTNAMES')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # tf.data only feeds the host; JAX owns the accelerators.
  tf.config.set_visible_devices([], 'GPU')
  if any(os.environ.get(name) for name in MULTI_PROCESS_ENV):
    jax.distributed.initialize()
  logging.info('JAX process %d/%d, local devices: %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
