"""Two real JAX processes (a coordinator on 127.0.0.1, two CPU devices each) train the tiny
config together as two hosts would, then resume from their shared checkpoint."""

import os
import re
import socket
import subprocess
import sys
import time

import pytest

from define_jax.model import checkpoints
from define_jax.training import train

from conftest import REPO_ROOT

NUM_PROCESSES = 2
# Both runs together, on a loaded 2-core machine; the processes are killed after it.
TIME_BUDGET_SECONDS = 230

FIRST_BATCH = re.compile(r'First local batch checksum \(process (\d+), step (\d+)\): (\S+)')
FINAL_PARAMETERS = re.compile(r'Final parameter checksum \(process (\d+), step (\d+)\): (\S+)')


def free_port() -> int:
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


def tails(log_paths) -> str:
  return '\n'.join(f'--- {path} (end) ---\n{open(path).read()[-3000:]}' for path in log_paths)


def run_processes(workdir, log_prefix, num_train_steps, deadline, cache_dir):
  """Runs every process of one training run to the end; returns [(pid, output)] by process
  id. Any failure or the deadline stops all of them."""
  environment = {name: value for name, value in os.environ.items()
                 if '_proxy' not in name.lower()}  # gRPC to 127.0.0.1 must not use a proxy.
  environment.update(
      XLA_FLAGS='--xla_force_host_platform_device_count=2', JAX_PLATFORMS='cpu',
      JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{free_port()}',
      JAX_NUM_PROCESSES=str(NUM_PROCESSES),
      # The second run reuses the first run's compiled programs: keeps the test in budget.
      JAX_COMPILATION_CACHE_DIR=cache_dir)
  command = [sys.executable, '-m', 'define_jax.main', '--config', 'configs/tiny.py',
             '--workdir', workdir, f'--config.optim.num_train_steps={num_train_steps}',
             # The multi-host mechanics do not depend on the loss; VGG would double compile time.
             '--config.loss.preset=l1',
             '--verbosity=0']  # The per-process checksums are INFO logs.
  processes, log_paths = [], [f'{log_prefix}.process{i}.log' for i in range(NUM_PROCESSES)]
  try:
    for process_id, log_path in enumerate(log_paths):
      with open(log_path, 'w') as log:
        processes.append(subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
            env=dict(environment, JAX_PROCESS_ID=str(process_id))))
    while any(process.poll() is None for process in processes):
      if any(process.returncode not in (None, 0) for process in processes):
        break  # The others would wait for the failed one in a collective.
      if time.monotonic() > deadline:
        raise AssertionError(f'Training did not finish within {TIME_BUDGET_SECONDS} s.\n'
                             + tails(log_paths))
      time.sleep(0.5)
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
        process.wait()
  for process in processes:
    assert process.returncode == 0, tails(log_paths)
  return [(process.pid, open(path).read()) for process, path in zip(processes, log_paths)]


def event_file_pids(workdir) -> set[int]:
  # TensorBoard names its files events.out.tfevents.<time>.<host>.<pid>.<uid>.v2.
  return {int(name.split('.')[-3]) for name in os.listdir(workdir)
          if name.startswith('events.out.tfevents.')}


def logged(pattern, outputs) -> dict[int, tuple[int, str]]:
  """{process id: (step, checksum)} of the first line matching `pattern` in each output."""
  found = {}
  for _, output in outputs:
    process_id, step, checksum = pattern.search(output).groups()
    found[int(process_id)] = (int(step), checksum)
  return found


@pytest.mark.slow
def test_two_processes_train_in_lockstep_and_resume(tmp_path):
  deadline = time.monotonic() + TIME_BUDGET_SECONDS
  workdir, cache_dir = str(tmp_path / 'run'), str(tmp_path / 'jax_cache')

  first = run_processes(workdir, str(tmp_path / 'first'), 2, deadline, cache_dir)
  batches = logged(FIRST_BATCH, first)
  assert batches[0][0] == batches[1][0] == 0
  assert batches[0][1] != batches[1][1], 'both processes read the same data shard'
  final = logged(FINAL_PARAMETERS, first)
  assert final[0] == final[1] and final[0][0] == 2, final

  # Only process 0 writes TensorBoard events (their file names carry the writer's pid) and
  # images; the checkpoint is written once (Orbax's primary host), into the shared workdir.
  assert event_file_pids(workdir) == {first[0][0]}
  assert os.path.isfile(os.path.join(workdir, 'before_after.png'))
  assert os.listdir(os.path.join(workdir, 'images'))
  wrote = f"Wrote {os.path.join(workdir, 'before_after.png')}"
  assert wrote in first[0][1] and wrote not in first[1][1]
  assert checkpoints.create_manager(workdir, read_only=True).all_steps() == [2]
  written = [name for _, dirs, files in os.walk(checkpoints.checkpoint_dir(workdir))
             for name in dirs + files]
  assert not [name for name in written if 'process_1' in name], written

  # The same command with a higher step budget resumes on both processes from the checkpoint.
  second = run_processes(workdir, str(tmp_path / 'second'), 3, deadline, cache_dir)
  for process_id, (_, output) in enumerate(second):
    assert re.search(r'Resuming from \S+ at step 2\.', output), f'process {process_id}'
  batches = logged(FIRST_BATCH, second)
  assert batches[0][0] == batches[1][0] == 2 and batches[0][1] != batches[1][1], batches
  resumed = logged(FINAL_PARAMETERS, second)
  assert resumed[0] == resumed[1] and resumed[0][0] == 3, resumed
  assert event_file_pids(workdir) == {first[0][0], second[0][0]}
  variables, _, step = checkpoints.load_model(workdir)
  assert step == 3 and train.parameter_fingerprint(variables) == resumed[0][1]
