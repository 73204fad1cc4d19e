"""Loss study: two loss variants on the tiny setting, end to end; reuse and refusals;
the 128² protocol (configs/study_faces128.py) on the tiny setting and its selection rule."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from configs import loss_study
from define_jax.data import bands
from define_jax.eval import metrics
from define_jax.model import checkpoints
from define_jax.study import study
from define_jax.study import study_protocol
from define_jax.training import training_curves

from conftest import REPO_ROOT

CONFIG_DIR = Path(REPO_ROOT, 'configs').resolve()
# Two of configs/loss_study.py's variants, one without VGG and DeFINe's final loss: every
# code path of the study, at half the compilations of all four.
STUDIED = ('l1', 'final')
CONFIGS = ('--configs', ','.join(f'loss_study:{variant}' for variant in STUDIED))
VARIANTS = tuple(f'loss_study_{variant}' for variant in STUDIED)
STEPS = 2
TINY = ('--config.model.image_size=64', '--config.model.layers=4',
        '--config.model.base_features=8', '--config.model.max_features=32',
        '--config.optim.batch_size=8', '--config.input.dataset=quickstart',
        '--config.eval.num_eval_images=8')


def run_study(workdir):
  """The command line; its compilation cache (WORKDIR/jax_cache) also keeps the tiny model's
  sub-second compilations, which the variants share."""
  command = [sys.executable, '-m', 'define_jax.study', *CONFIGS, '--workdir', str(workdir),
             '--steps', str(STEPS), *TINY]
  env = dict(os.environ, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  env.pop('JAX_COMPILATION_CACHE_DIR', None)  # The suite's cache (conftest): use the study's.
  result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-4000:]
  return result


def table_rows(markdown):
  """The table's lines as lists of cells (header first, separator dropped)."""
  lines = [line for line in markdown.splitlines() if line.startswith('| ')]
  return [[cell.strip() for cell in line.strip('|').split('|')] for line in lines]


def check_artifacts(workdir):
  for name in ('study.md', 'curves.png', 'grid.png', 'study.json'):
    assert (workdir / name).stat().st_size > 0, name
  for variant in VARIANTS:
    manager = checkpoints.create_manager(str(workdir / variant), read_only=True)
    assert manager.all_steps() == [STEPS]

  header, *rows = table_rows((workdir / 'study.md').read_text(encoding='utf-8'))
  assert [cell.split(' (')[0] for cell in header[2:]] == bands.band_labels()
  # One row per variant for each metric, in --configs order.
  assert [row[1].strip('`') for row in rows] == list(VARIANTS) * len(metrics.METRICS)
  for first in range(0, len(rows), len(VARIANTS)):
    block = rows[first:first + len(VARIANTS)]
    for column in range(2, len(header)):
      # Every band has images (the small validation split is cycled) and one best value.
      assert sum(row[column].startswith('**') for row in block) == 1, (block, column)

  report = json.loads((workdir / 'study.json').read_text(encoding='utf-8'))
  assert report['differences'] == {'loss.preset': list(STUDIED)}
  assert {row['method'] for row in report['rows']} == set(VARIANTS)
  assert len(report['summary']) == 3 + len(VARIANTS) - 1
  for variant in VARIANTS:
    assert report['curves'][variant]['eval_psnr'], variant
    assert training_curves.raw_output_l1(report['curves'][variant]), variant
  return report


# One test, so that parallel test workers never run the study twice.
@pytest.mark.slow
def test_study_end_to_end_reuse_and_refusals(tmp_path):
  workdir = tmp_path / 'study'
  run_study(workdir)
  report = check_artifacts(workdir)
  assert any((workdir / 'jax_cache').iterdir())

  # A second run reuses every finished run and reproduces the numbers.
  checkpoint_times = {v: os.path.getmtime(workdir / v / 'checkpoints' / str(STEPS))
                      for v in VARIANTS}
  rerun = run_study(workdir)
  terminal = rerun.stdout + rerun.stderr
  assert 'Nothing to do' in terminal and 'Training pconv_unet' not in terminal
  for variant, mtime in checkpoint_times.items():
    assert os.path.getmtime(workdir / variant / 'checkpoints' / str(STEPS)) == mtime
  assert check_artifacts(workdir)['rows'] == report['rows']

  # Runs made with other settings or past the budget are refused before any training.
  argv = [*CONFIGS, '--workdir', str(workdir), '--steps', str(STEPS), *TINY]
  with pytest.raises(ValueError, match='optim.learning_rate: 0.0002 there, 0.5 now'):
    study.run(argv + ['--config.optim.learning_rate=0.5'])
  with pytest.raises(ValueError, match='trained for 2 steps, more than the budget of 1'):
    study.run(argv + ['--steps', '1'])


def test_without_configs_the_study_compares_the_four_variants_of_loss_study():
  assert study.default_configs() == ','.join(f'loss_study:{v}' for v in loss_study.VARIANTS)
  assert loss_study.VARIANTS == ('l1', 'valid_hole', 'style', 'final')


@pytest.mark.parametrize('override, message', [
    ('--config.optim.no_such_field=3', "no config field 'no_such_field'"),
    ('--config.optim.batch_size=abc', 'config.optim.batch_size=abc'),
])
def test_bad_overrides_are_rejected_naming_the_field(tmp_path, override, message):
  with pytest.raises(ValueError, match=message):
    study.run(['--workdir', str(tmp_path), override])


def test_configs_resolve_by_name_and_unknown_names_are_listed(tmp_path):
  with pytest.raises(FileNotFoundError, match='configs/loss_nothing.py'):
    study.run(['--workdir', str(tmp_path), '--configs', 'loss_study:l1,loss_nothing'])


PROTOCOL_TINY = (
    '--config.train.model.image_size=64', '--config.train.model.layers=4',
    '--config.train.model.base_features=8', '--config.train.model.max_features=32',
    '--config.train.optim.batch_size=8',
    '--config.train.model.mask_channel=False', '--config.train.model.prefill=none',
    '--config.train.input.dataset=quickstart', '--config.train.input.masks=generated',
    '--config.train.eval.num_eval_images=8', '--config.train.loss.discriminator_features=8',
    '--config.train.log.log_every_steps=1', '--config.train.eval.eval_every_steps=2',
    '--config.train.eval.image_every_steps=2', '--config.train.log.checkpoint_every_steps=1',
    '--config.images_per_variant=8', '--config.report_images=12',
    '--config.selection_images=12')


def test_training_time_adds_every_session_of_a_run_from_its_events(tmp_path):
  """Each session's events file counts from its first to its last write, also a session
  that was killed (nothing written at its end)."""
  from tensorboard.compat.proto import event_pb2
  from tensorboard.summary.writer import event_file_writer
  for session, seconds_after_start in enumerate(((4.0, 10.0), (5.0,))):
    # The writer's own first event is stamped now, as training's is at its start.
    writer = event_file_writer.EventFileWriter(str(tmp_path), filename_suffix=f'.{session}')
    start = time.time()
    for seconds in seconds_after_start:
      writer.add_event(event_pb2.Event(wall_time=start + seconds, step=1))
    writer.close()
  assert len(list(tmp_path.glob('events.out.tfevents.*'))) == 2
  assert training_curves.training_seconds(tmp_path) == pytest.approx(15.0, abs=0.5)


@pytest.mark.slow
def test_protocol_trains_all_variants_from_one_start_and_selects(tmp_path, tiny_checkpoint):
  """configs/study_faces128.py on the tiny setting: five variants from one start, the
  tables, figures, README section and selection. (Reuse and resumption are
  study_lib.train_variants', tested above.)"""
  workdir = tmp_path / 'protocol'
  argv = ['--config', str(CONFIG_DIR / 'study_faces128.py'), '--workdir', str(workdir),
          f'--config.train.optim.init_from={tiny_checkpoint}', *PROTOCOL_TINY]
  result = study.run(argv)
  names = ['v1_l1', 'v2_valid_hole', 'v3_style', 'v4_final', 'v5_adversarial']
  for name in names:
    assert checkpoints.create_manager(str(workdir / name), read_only=True).all_steps()[-1] == 1
    assert training_curves.training_seconds(workdir / name) > 0
  for file in ('study.md', 'study.json', 'readme_section.md', 'curves.png', 'grid.png',
               'astronaut.png'):
    assert (workdir / file).stat().st_size > 0, file

  report = json.loads((workdir / 'study.json').read_text(encoding='utf-8'))
  assert [v['images_seen'] for v in report['variants']] == [8] * 5
  assert {row['method'] for row in report['report_rows']} == {'packaged', *names}
  # 12 report images, two per band, and the 12 images after them choose.
  assert [row['images'] for row in report['report_rows'] if row['method'] == 'packaged'] == (
      [2] * bands.NUM_BANDS + [12])
  selection = result['selection']
  assert selection['images'] == 12 and selection['large_images'] == 6
  assert set(selection['qualifying']) <= set(names)
  best = min(['packaged', *selection['qualifying']],
             key=lambda n: selection['lpips_alex_large'][n])
  assert selection['chosen'] == best
  section = (workdir / 'readme_section.md').read_text(encoding='utf-8')
  assert section.startswith('## What each loss term does')
  assert 'LPIPS-Alex' in section and '`v5_adversarial` against `v4_final`' in section
  assert f"{report['selection_rows'][0]['psnr']:.2f}" in result['markdown']


def test_protocol_rejects_mixed_options_and_missing_start(tmp_path):
  config = str(CONFIG_DIR / 'study_faces128.py')
  with pytest.raises(SystemExit):
    study.parse_args(['--config', config, '--steps', '3'])
  with pytest.raises(ValueError, match='init_from must name the common starting model'):
    study.run(['--config', config, '--workdir', str(tmp_path),
               '--config.train.optim.init_from='])


def test_selection_rule_limits_psnr_loss_and_keeps_the_packaged_model_otherwise():
  image_bands = np.arange(12) % bands.NUM_BANDS  # Two images per band; bands 3-5 from 30 %.
  large = image_bands >= 3

  def scores(psnr, lpips_small, lpips_large):
    return {'psnr': np.full(12, psnr), 'lpips_alex': np.where(large, lpips_large, lpips_small)}

  per_image = {'packaged': scores(30.0, 0.05, 0.20),
               'sharp_but_noisy': scores(29.5, 0.01, 0.10),  # Loses 0.5 dB: disqualified.
               'better': scores(29.8, 0.09, 0.15),  # Loses 0.2 dB, better on large holes.
               'worse': scores(30.5, 0.01, 0.25)}  # Best small-hole LPIPS: not what counts.
  selection = study_protocol.select(per_image, image_bands,
                                    ['sharp_but_noisy', 'better', 'worse'], 0.3, 0.3)
  assert selection['qualifying'] == ['better', 'worse']
  assert selection['chosen'] == 'better' and selection['large_images'] == 6
  np.testing.assert_allclose(selection['lpips_alex_large']['better'], 0.15)
  kept = study_protocol.select(per_image, image_bands, ['sharp_but_noisy', 'worse'], 0.3, 0.3)
  assert kept['chosen'] == 'packaged' and kept['qualifying'] == ['worse']
