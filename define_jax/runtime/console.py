"""Terminal conventions of the command-line entry points: library logs only on request,
expected errors as one `error: ...` line and exit status 2, one --checkpoint argument, and
--config.SECTION.FIELD=VALUE overrides next to a command's own flags.

TensorFlow's native libraries print load-time banners (oneDNN, absl::InitializeLog) straight
to file descriptor 2 when first imported, whatever TF_CPP_MIN_LOG_LEVEL says (TF 2.21), so
the entry points import it through `import_tensorflow`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Callable, Iterator, Sequence


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool = True) -> Iterator[None]:
  """Sends file descriptor 2 (native libraries' stderr) to /dev/null inside the block."""
  if not enabled:
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with open(os.devnull, 'w', encoding='utf-8') as devnull:
    os.dup2(devnull.fileno(), 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def import_tensorflow(verbose: bool = False):
  """The tensorflow module; its banners and C++ INFO/WARNING logs only when verbose."""
  if 'tensorflow' in sys.modules:
    return sys.modules['tensorflow']
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '0' if verbose else '2')
  with native_stderr_silenced(not verbose):
    import tensorflow  # pylint: disable=g-import-not-at-top
  return tensorflow


def add_checkpoint_argument(parser: argparse.ArgumentParser, *aliases: str) -> None:
  """--checkpoint (and `aliases`): the model to use; empty means the default packaged model."""
  parser.add_argument('--checkpoint', *aliases, dest='checkpoint', default='',
                      help='Training workdir, its checkpoints directory, one step directory, '
                      'a model file from define_jax.export, or a packaged model\'s name (the NAME of '
                      'define_jax/pretrained/NAME.msgpack; default: the default packaged face '
                      'model).')


def parse_with_config_overrides(parser: argparse.ArgumentParser,
                                argv: Sequence[str]) -> argparse.Namespace:
  """The parser's options, with the --config.SECTION.FIELD=VALUE arguments (config
  overrides) as options.config_overrides; any other unknown argument is a usage error."""
  options, extra = parser.parse_known_args(argv)
  unexpected = [argument for argument in extra if not argument.startswith('--config.')]
  if unexpected:
    parser.error(f'unrecognized arguments: {" ".join(unexpected)} (config fields are set '
                 'with --config.SECTION.FIELD=VALUE)')
  options.config_overrides = extra
  return options


# Exit status of a command stopped by bad input or settings (as argparse's usage errors).
ERROR_STATUS = 2
# Exit status after Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED_STATUS = 130


def error_line(error: BaseException) -> str:
  """`error: ...` on one line: multi-line messages (lists of mismatches) are joined."""
  return 'error: ' + ' '.join(line.strip() for line in str(error).splitlines() if line.strip())


def exit_status(command: Callable[[], str],
                errors: tuple[type[Exception], ...] = (FileNotFoundError, ValueError)) -> int:
  """Runs an entry point's work: prints the text it returns and gives 0, or, for one of the
  expected `errors` (bad input, named in its message), prints `error: ...` and gives
  ERROR_STATUS."""
  try:
    text = command()
  except errors as error:
    print(error_line(error), file=sys.stderr)
    return ERROR_STATUS
  print(text)
  return 0
