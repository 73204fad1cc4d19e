"""Terminal conventions of the command-line entry points: library logs only on request.

TensorFlow's native libraries print load-time banners (oneDNN, absl::InitializeLog) straight
to file descriptor 2 when first imported, whatever TF_CPP_MIN_LOG_LEVEL says (TF 2.21), so
the entry points import it through `import_tensorflow`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator


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
