"""Every entry point: --help exits 0 and names the command as it is typed."""

import contextlib
import importlib
import io

import pytest

ENTRY_POINTS = ('main', 'evaluate', 'inpaint', 'export', 'benchmark', 'study',
                'datasets.prepare', 'tools.port_vgg16', 'tools.model_card_figures',
                'tools.port_mtcnn', 'tools.measure_face_template', 'demo')


@pytest.mark.parametrize('name', ENTRY_POINTS)
def test_help_exits_zero_and_names_the_command(name):
  module = importlib.import_module(f'define_jax.{name}')
  out = io.StringIO()
  with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
    if name == 'main':  # absl's app.run reads the whole argv, program name first.
      module.run(['main', '--help'])
    else:
      module.main(['--help'])
  assert exit_info.value.code in (0, None)
  assert f'python -m define_jax.{name}' in out.getvalue().splitlines()[0]


def test_main_help_explains_config_overrides():
  from define_jax import main  # pylint: disable=g-import-not-at-top

  out = io.StringIO()
  with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
    main.run(['main', '-h'])
  assert '--config.SECTION.FIELD=VALUE' in out.getvalue() and '--verbosity' in out.getvalue()
