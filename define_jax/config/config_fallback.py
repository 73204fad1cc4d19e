"""Config files without ml_collections: a minimal ConfigDict, used only where it is missing.

Accelerator hosts may have only the compute core's packages (jax, flax, optax, orbax,
numpy), and `python -m define_jax.benchmark train|infer|torch` must run there. Config files
say `import ml_collections` and build an `ml_collections.ConfigDict`; `load_file` runs such
a file with this module standing in for ml_collections during the call, so the config files
stay as they are. It offers what configs/*.py and the benchmark's path use: attribute and
item access, `to_dict`, `config_dict.placeholder` and locking (a field a file did not set
cannot be set later, as with ml_collections' locked configs), and `--config.SECTION.FIELD=VALUE`
overrides of the plain types the configs use (bool, int, float, str, None placeholders of
str, tuples and lists), each converted to the type of the value it replaces.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence


class ConfigDict:
  """Fields by attribute or item; nested mappings become ConfigDicts."""

  def __init__(self, initial: Mapping[str, Any] | None = None):
    object.__setattr__(self, '_fields', {})
    object.__setattr__(self, '_locked', False)
    for name, value in (initial or {}).items():
      self[name] = value

  def __getattr__(self, name: str) -> Any:
    try:
      return self._fields[name]
    except KeyError:
      raise AttributeError(f'config has no field {name!r}') from None

  def __setattr__(self, name: str, value: Any) -> None:
    if self._locked and name not in self._fields:
      raise AttributeError(f'config has no field {name!r} (locked: fields come from the file)')
    self._fields[name] = ConfigDict(value) if isinstance(value, Mapping) else value

  __getitem__ = __getattr__
  __setitem__ = __setattr__

  def __contains__(self, name: str) -> bool:
    return name in self._fields

  def __iter__(self) -> Iterator[str]:
    return iter(self._fields)

  def get(self, name: str, default: Any = None) -> Any:
    return self._fields.get(name, default)

  def keys(self):
    return self._fields.keys()

  def items(self):
    return self._fields.items()

  def lock(self) -> ConfigDict:
    object.__setattr__(self, '_locked', True)
    for value in self._fields.values():
      if isinstance(value, ConfigDict):
        value.lock()
    return self

  def to_dict(self) -> dict[str, Any]:
    return {name: value.to_dict() if isinstance(value, ConfigDict) else value
            for name, value in self._fields.items()}

  def __repr__(self) -> str:
    return f'ConfigDict({self.to_dict()!r})'


def placeholder(field_type: type) -> None:  # pylint: disable=unused-argument
  """ml_collections' placeholder: a field without value (None) that a run must set."""
  return None


# `import ml_collections` inside a config file gets this stand-in while load_file runs it.
_STAND_IN = types.ModuleType('ml_collections', __doc__)
_STAND_IN.ConfigDict = ConfigDict
_STAND_IN.config_dict = types.SimpleNamespace(ConfigDict=ConfigDict, placeholder=placeholder)
_ABSENT = object()


def load_file(config_file: Path, overrides: Sequence[str] = ()) -> ConfigDict:
  """get_config() of `config_file` ('PATH' or 'PATH:ARG'), locked."""
  path, _, argument = str(config_file).partition(':')
  previous = sys.modules.get('ml_collections', _ABSENT)
  sys.modules['ml_collections'] = _STAND_IN
  try:
    spec = importlib.util.spec_from_file_location(f'_config_{Path(path).stem}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(argument) if argument else module.get_config()
  finally:
    if previous is _ABSENT:
      del sys.modules['ml_collections']
    else:
      sys.modules['ml_collections'] = previous
  config.lock()
  for override in overrides:
    apply_override(config, override, Path(path).name)
  return config


def apply_override(config: Any, override: str, file_name: str) -> None:
  """Applies one `--config.SECTION.FIELD=VALUE` to a config (this module's ConfigDict or
  ml_collections'); ValueError names an unknown field or a value that is not of the
  field's type."""
  dotted, equals, text = override.removeprefix('--config.').partition('=')
  if not override.startswith('--config.') or not equals:
    raise ValueError(f'{file_name}: {override!r} is not --config.FIELD=VALUE.')
  *sections, field = dotted.split('.')
  is_section = lambda value: hasattr(value, 'keys')
  section = config
  for name in sections:
    section = section[name] if name in section else None
    if not is_section(section):
      raise ValueError(f'{file_name} has no config field {dotted!r}.')
  if field not in section or is_section(section[field]):
    raise ValueError(f'{file_name} has no config field {dotted!r}.')
  current = section[field]
  try:
    if current is None or isinstance(current, str):  # Placeholders are of str here.
      value = text
    elif isinstance(current, bool):
      value = {'true': True, 'false': False}[text.lower()]
    elif isinstance(current, (int, float)):
      value = type(current)(ast.literal_eval(text))
      if isinstance(current, int) and value != ast.literal_eval(text):
        raise ValueError(text)
    else:
      value = type(current)(ast.literal_eval(text))
  except (KeyError, ValueError, SyntaxError, TypeError):
    raise ValueError(f'{file_name}: --config.{dotted}={text!r}: expected '
                     f'{type(current).__name__}.') from None
  section[field] = value
