"""The package's import graph: subpackages in layers that import only downwards, no cycles,
and the model side never imports the loss side.

Read from the source (every import statement, those inside functions too), so a lazy import
that only hides a cycle (or an upward import) from Python's loader still counts.
"""

import ast
import pathlib

from conftest import REPO_ROOT

PACKAGE = 'define_jax'
# The subpackages, lowest layer first: a module imports only from its own layer or lower ones.
# CLI is the top: the command lines at the package's top level (`python -m define_jax.main`)
# and each subpackage's __main__.py.
CLI = 'command lines'
LAYERS = (
    ('files', 'config', 'runtime'),
    ('model', 'faces', 'data', 'datasets'),
    ('inference',),
    ('eval', 'demo'),
    ('training',),
    ('study', 'benchmark', 'tools'),
    (CLI,),
)


def import_graph(root: pathlib.Path) -> dict[str, set[str]]:
  """{module: the package's modules it imports} for every module under root/PACKAGE."""
  modules = {}
  for path in (root / PACKAGE).rglob('*.py'):
    parts = path.relative_to(root).with_suffix('').parts
    modules['.'.join(parts[:-1] if parts[-1] == '__init__' else parts)] = path
  graph = {}
  for name, path in modules.items():
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
      if isinstance(node, ast.Import):
        imported.update(alias.name for alias in node.names)
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ''
        if node.level:  # Relative: from the package this many levels up.
          levels = package.split('.')[:len(package.split('.')) - node.level + 1]
          base = '.'.join(levels + ([node.module] if node.module else []))
        # `from package import module` imports the module; `from module import name` the module.
        imported.update(f'{base}.{alias.name}' if f'{base}.{alias.name}' in modules else base
                        for alias in node.names)
    graph[name] = {module for module in imported if module in modules and module != name}
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle [a, b, ..., a], or None (depth-first search)."""
  state = {}  # module -> 'open' while on the current path, 'done' once fully explored.
  path = []

  def visit(module):
    state[module] = 'open'
    path.append(module)
    for imported in sorted(graph[module]):
      if state.get(imported) == 'open':
        return path[path.index(imported):] + [imported]
      if imported not in state and (cycle := visit(imported)):
        return cycle
    state[module] = 'done'
    path.pop()
    return None

  for module in sorted(graph):
    if module not in state and (cycle := visit(module)):
      return cycle
  return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
  seen, pending = set(), [start]
  while pending:
    for imported in graph[pending.pop()] - seen:
      seen.add(imported)
      pending.append(imported)
  return seen


def layer_of(module: str, subpackages: set[str]) -> tuple[int, str]:
  """(layer index, its subpackage or CLI) of a module of the package."""
  parts = module.split('.')[1:]
  unit = parts[0] if parts and parts[0] in subpackages and parts[-1] != '__main__' else CLI
  for index, layer in enumerate(LAYERS):
    if unit in layer:
      return index, unit
  raise AssertionError(f'{unit} is in no layer of test_layering.LAYERS: place it there.')


def upward_imports(root: pathlib.Path) -> list[str]:
  """'a -> b' for each import of a module from a higher layer (the root module is skipped)."""
  subpackages = {path.parent.name for path in (root / PACKAGE).glob('*/__init__.py')}
  graph = import_graph(root)
  return sorted(f'{module} ({layer_of(module, subpackages)[1]}) -> {imported} '
                f'({layer_of(imported, subpackages)[1]})'
                for module, imports in graph.items() if module != PACKAGE
                for imported in imports
                if layer_of(imported, subpackages)[0] > layer_of(module, subpackages)[0])


def test_layer_check_finds_a_lazy_upward_import(tmp_path):
  package = tmp_path / PACKAGE
  for sub in ('model', 'inference', 'eval'):
    (package / sub).mkdir(parents=True)
    (package / sub / '__init__.py').write_text('')
  (package / '__init__.py').write_text('')
  (package / 'inference' / 'fit.py').write_text('def f():\n  from define_jax.eval import base\n')
  (package / 'eval' / 'base.py').write_text('from define_jax.model import net\n')
  (package / 'model' / 'net.py').write_text('')
  (package / 'main.py').write_text('from define_jax.inference import fit\n')
  assert upward_imports(tmp_path) == [
      'define_jax.inference.fit (inference) -> define_jax.eval.base (eval)']
  (package / 'inference' / 'fit.py').write_text('from define_jax.model import net\n')
  assert upward_imports(tmp_path) == []
  (package / 'model' / 'net.py').write_text('import define_jax.main\n')  # A command line.
  assert upward_imports(tmp_path) == ['define_jax.model.net (model) -> define_jax.main '
                                      f'({CLI})']


def test_every_subpackage_imports_only_from_its_own_or_lower_layers():
  root = pathlib.Path(REPO_ROOT)
  subpackages = {path.parent.name for path in (root / PACKAGE).glob('*/__init__.py')}
  placed = {unit for layer in LAYERS for unit in layer} - {CLI}
  assert subpackages == placed, 'place new subpackages in LAYERS; remove gone ones'
  upward = upward_imports(root)
  assert not upward, 'Imports from a higher layer:\n' + '\n'.join(upward)


def test_cycle_finder_finds_a_lazy_import_cycle(tmp_path):
  package = tmp_path / PACKAGE
  (package / 'sub').mkdir(parents=True)
  (package / '__init__.py').write_text('')
  (package / 'sub' / '__init__.py').write_text('')
  (package / 'a.py').write_text('from define_jax.sub import b\n')
  (package / 'sub' / 'b.py').write_text('def f():\n  from .. import c\n')
  (package / 'c.py').write_text('import numpy\nfrom define_jax.a import something\n')
  graph = import_graph(tmp_path)
  assert graph['define_jax.sub.b'] == {'define_jax.c'}
  assert find_cycle(graph) == ['define_jax.a', 'define_jax.sub.b', 'define_jax.c',
                               'define_jax.a']
  (package / 'c.py').write_text('import numpy\n')
  assert find_cycle(import_graph(tmp_path)) is None


def test_the_package_has_no_import_cycle():
  graph = import_graph(pathlib.Path(REPO_ROOT))
  assert 'define_jax.model.model_file' in graph['define_jax.model.checkpoints']  # The graph is read.
  cycle = find_cycle(graph)
  assert cycle is None, 'Import cycle: ' + ' -> '.join(cycle)


def test_the_model_side_imports_nothing_from_the_loss_side():
  graph = import_graph(pathlib.Path(REPO_ROOT))
  for module in ('model.models', 'model.prefill', 'model.masking'):
    imported = reachable(graph, f'{PACKAGE}.{module}')
    assert not imported & {f'{PACKAGE}.training.losses', f'{PACKAGE}.model.vgg',
                           f'{PACKAGE}.training.steps'}, module
