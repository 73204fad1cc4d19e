"""The package's import graph: no cycles, and the model side never imports the loss side.

Read from the source (every import statement, those inside functions too), so a lazy import
that only hides a cycle from Python's loader still counts.
"""

import ast
import pathlib

from conftest import REPO_ROOT

PACKAGE = 'define_jax'


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
  assert 'define_jax.model_file' in graph['define_jax.checkpoints']  # The graph is read.
  cycle = find_cycle(graph)
  assert cycle is None, 'Import cycle: ' + ' -> '.join(cycle)


def test_the_model_side_imports_nothing_from_the_loss_side():
  graph = import_graph(pathlib.Path(REPO_ROOT))
  for module in ('models', 'prefill', 'masking'):
    imported = reachable(graph, f'{PACKAGE}.{module}')
    assert not imported & {f'{PACKAGE}.losses', f'{PACKAGE}.vgg', f'{PACKAGE}.steps'}, module
