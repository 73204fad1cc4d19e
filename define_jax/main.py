"""Trains (or resumes) a model: python -m define_jax.main --config configs/NAME.py --workdir DIR

  python -m define_jax.main --config configs/quickstart.py --workdir runs/quickstart
  python -m define_jax.main --config configs/default.py --workdir runs/ffhq256 \\
      --config.input.data_dir=/data/tfds --config.optim.batch_size=12

Any field of the config file can be overridden with --config.SECTION.FIELD=VALUE (repeatable);
every field is commented in configs/default.py. Unknown fields, wrong types and
inconsistent settings are rejected, naming the field, before anything compiles. Running
the same command again resumes from the newest checkpoint in the workdir.

The terminal shows the start, one line per log step (step, loss, images/s, ETA),
evaluations, checkpoint saves and the end; --verbosity=0 adds library logs (Orbax,
TensorFlow, absl: INFO), --verbosity=1 debug logs.

Multi-process runs (several GPU hosts, TPU pods; see launch/) start one such process per
host, which calls jax.distributed.initialize() (see --multi_process). It finds the other
processes in SLURM's or Cloud TPU's environment; elsewhere set JAX_COORDINATOR_ADDRESS
(host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID on every process.
"""

import os
import sys
import textwrap

from absl import app
from absl import flags
from absl import logging
import jax

from define_jax.config import config_lib
from define_jax.runtime import console

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and images.')
config_lib.define_config_flag()
flags.DEFINE_bool(
    'multi_process', None,
    'Call jax.distributed.initialize(). Default: on when JAX_COORDINATOR_ADDRESS or '
    'TPU_WORKER_HOSTNAMES (GKE) is set or the SLURM step has several tasks; pass it on Cloud '
    'TPU VM pods, where the cluster is only visible through the metadata server.')
flags.mark_flags_as_required(['config', 'workdir'])

PROGRAM = 'python -m define_jax.main'
HELP_FLAGS = ('-h', '-?', '--help', '--helpshort')
# --verbosity is absl's own flag; listed in --help with this text.
_HELP_FLAG_NAMES = ('config', 'workdir', 'multi_process', 'verbosity')
_VERBOSITY_HELP = ('-1 (default): progress, evaluations, checkpoints and warnings only; '
                   '0: also library INFO logs (Orbax, TensorFlow, absl); 1: debug logs.')


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


def usage() -> str:
  """The --help text: this module's docstring and its flags."""
  lines = [f'usage: {PROGRAM} --config configs/NAME.py --workdir DIR '
           '[--config.SECTION.FIELD=VALUE ...] [--verbosity=N] [--multi_process]', '',
           __doc__, 'flags:']
  for name in _HELP_FLAG_NAMES:
    text = _VERBOSITY_HELP if name == 'verbosity' else FLAGS[name].help
    lines.append(textwrap.fill(f'--{name}: {text}', 88, initial_indent='  ',
                               subsequent_indent='      '))
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # absl turns an unset --verbosity into INFO, where Orbax logs every step of every save.
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  # TensorFlow (imported by train) is imported here, after the flags, so that its load-time
  # logs follow --verbosity.
  tf = console.import_tensorflow(verbose=FLAGS.verbosity >= 0)
  from define_jax.training import train  # pylint: disable=g-import-not-at-top

  # tf.data only feeds the host; JAX owns the accelerators.
  tf.config.set_visible_devices([], 'GPU')
  multi_process = FLAGS.multi_process
  if multi_process is None:
    multi_process = multi_process_environment()
  if multi_process:
    jax.distributed.initialize(**process_arguments_from_environment())
  logging.info('JAX process %d/%d, local devices: %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  try:
    state = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (FileNotFoundError, ValueError) as error:  # Settings or data, named in the message.
    print(console.error_line(error), file=sys.stderr)
    sys.exit(console.ERROR_STATUS)
  # Identical on every process of a run: the replicas never diverge.
  logging.info('Final parameter checksum (process %d, step %d): %s', jax.process_index(),
               int(state.step), train.parameter_fingerprint(
                   {'params': state.params, 'batch_stats': state.batch_stats}))


def run(argv: list[str] | None = None) -> None:
  """app.run(main), with --help printing usage() and exiting 0 (absl's exits 1)."""
  argv = sys.argv if argv is None else argv
  if any(argument in HELP_FLAGS for argument in argv[1:]):
    print(usage())
    sys.exit(0)
  config_lib.make_importable(argv)  # Config files import their base from configs/.
  try:  # Unknown fields and bad values as one line, before absl's traceback would.
    check_config_arguments(argv)
  except (FileNotFoundError, ValueError) as error:
    print(console.error_line(error), file=sys.stderr)
    sys.exit(console.ERROR_STATUS)
  app.run(main, argv=argv)


def check_config_arguments(argv: list[str]) -> None:
  """Parses --config FILE and its --config.FIELD=VALUE overrides as config_lib.load does;
  ValueError names an unknown field (with the nearest one) or a bad value."""
  config, overrides = None, []
  for i, argument in enumerate(argv[1:], 1):
    if argument.startswith('--config='):
      config = argument.split('=', 1)[1]
    elif argument == '--config' and i + 1 < len(argv):
      config = argv[i + 1]
    elif argument.startswith('--config.'):
      overrides.append(argument)
      if '=' not in argument and i + 1 < len(argv) and not argv[i + 1].startswith('-'):
        overrides.append(argv[i + 1])  # --config.FIELD VALUE
  if config:
    config_lib.load(config, overrides)


if __name__ == '__main__':
  run()
