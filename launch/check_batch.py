"""Checks that a config's global batch splits evenly over the devices a launch will have.

  python3 launch/check_batch.py DEVICES CONFIG [FLAG...]

The launch scripts run it before they allocate machines or start training, so that a batch
that cannot be split (DeFINe's 6 over 16 GPUs) is found in a second, not after the queue.
Exit status 0 when it splits, 2 (with one line naming the numbers and the fix) when not. It
needs Python and this repository only: the config file loads through
define_jax/config/config_fallback.py, without JAX or ml_collections. Of FLAG, the
--config.SECTION.FIELD=VALUE (or --config.SECTION.FIELD VALUE) overrides are applied; other
flags of define_jax.main are ignored.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from define_jax.config import config_fallback  # pylint: disable=wrong-import-position


def config_overrides(flags: list[str]) -> list[str]:
  """The --config.FIELD=VALUE overrides among define_jax.main's flags."""
  overrides = []
  for i, flag in enumerate(flags):
    if flag.startswith('--config.'):
      if '=' not in flag and i + 1 < len(flags):
        flag = f'{flag}={flags[i + 1]}'
      overrides.append(flag)
  return overrides


def main(argv: list[str]) -> int:
  if len(argv) < 2 or not argv[0].isdigit():
    print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
    return 2
  devices, config_file = int(argv[0]), argv[1]
  try:
    config = config_fallback.load_file(Path(config_file), config_overrides(argv[2:]))
  except (OSError, ValueError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  batch = config.optim.batch_size
  if devices > 0 and batch % devices == 0:
    return 0
  fitting = [count for count in range(1, devices) if batch % count == 0]
  print(f'error: config.optim.batch_size={batch} ({config_file}) does not split over '
        f'{devices} devices: pass --config.optim.batch_size=N with N a multiple of {devices} '
        f'(e.g. {math.lcm(batch, devices)}), or use {fitting[-1] if fitting else 1} device(s).',
        file=sys.stderr)
  return 2


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
