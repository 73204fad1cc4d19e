"""Every entry point: --help exits 0 and names the command as it is typed."""

import ast
import contextlib
import importlib
import io
import pathlib

import pytest

from conftest import REPO_ROOT

ENTRY_POINTS = ('main', 'evaluate', 'inpaint', 'export', 'benchmark', 'study',
                'datasets.prepare', 'tools.port_vgg16', 'tools.model_card_figures',
                'tools.port_mtcnn', 'tools.measure_face_template', 'demo')
# Commands that are packages: `python -m define_jax.NAME` runs NAME/__main__.py, which calls
# the main() of this module.
MAIN_MODULES = {'benchmark': 'benchmark.benchmark', 'study': 'study.study', 'demo': 'demo.demo'}


@pytest.mark.parametrize('name', ENTRY_POINTS)
def test_help_exits_zero_and_names_the_command(name):
  module = importlib.import_module(f'define_jax.{MAIN_MODULES.get(name, name)}')
  out = io.StringIO()
  with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
    if name == 'main':  # absl's app.run reads the whole argv, program name first.
      module.run(['main', '--help'])
    else:
      module.main(['--help'])
  assert exit_info.value.code in (0, None)
  assert f'python -m define_jax.{name}' in out.getvalue().splitlines()[0]


def test_each_console_script_is_an_entry_point_s_main():
  """setup.py's console scripts call the function `python -m define_jax.NAME` calls."""
  tree = ast.parse((pathlib.Path(REPO_ROOT) / 'setup.py').read_text(encoding='utf-8'))
  scripts = next(ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) and node.targets[0].id == 'CONSOLE_SCRIPTS')
  targets = {script.split(' = ')[1] for script in scripts}
  expected = {f'define_jax.{MAIN_MODULES.get(name, name)}:{"run" if name == "main" else "main"}'
              for name in ENTRY_POINTS if not name.startswith('tools.')}
  assert targets == expected
  for target in targets:
    module, function = target.split(':')
    assert callable(getattr(importlib.import_module(module), function)), target


def test_main_help_explains_config_overrides():
  from define_jax import main  # pylint: disable=g-import-not-at-top

  out = io.StringIO()
  with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
    main.run(['main', '-h'])
  assert '--config.SECTION.FIELD=VALUE' in out.getvalue() and '--verbosity' in out.getvalue()
