"""Exports a trained model to one file: config, step, and the weights inference uses.

  python -m define_jax.export --workdir runs/faces128 --out faces128.msgpack [--dtype float16]
  python -m define_jax.export --workdir runs/faces256 --out faces256.msgpack --face_prefill mirror

The file holds the run's config (JSON, in its sections, with the face template that
fit='auto' aligns faces to: the run's own, else the one measured on the training faces;
files written before the sections hold it flat, and checkpoints.load_model migrates it),
its step and the moving-average weights and BatchNorm statistics (the raw weights when the
run kept no average), as msgpack (no pickle: loading it runs no code). Weights are stored
as float16 by default (half the size; scores are measured on the exported file); BatchNorm
statistics stay float32.
`Inpainter.from_checkpoint`, `inpaint --checkpoint`, `evaluate --checkpoint` and the demo
take such a file wherever they take a workdir (export takes no config overrides: the file
describes the run as it was trained, and the readers take them). One inference setting can be
stored with it, as the way the model is meant to be run: --face_prefill (model.face_prefill,
the prefill of fit='auto''s aligned face canvases; readers still override it, and
--config.model.face_prefill=biharmonic turns 'mirror' off).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from define_jax.files import output_files
from define_jax.model import model_file
from define_jax.model import network
from define_jax.model import prefill


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='python -m define_jax.export', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', required=True,
                      help='Training workdir, its checkpoints directory or one step directory.')
  parser.add_argument('--out', required=True, help=f'Model file to write (*{model_file.SUFFIX}).')
  parser.add_argument('--dtype', default='float16', choices=model_file.STORAGE_DTYPES,
                      help='Storage dtype of the weights (BatchNorm statistics stay float32).')
  parser.add_argument('--face_prefill', choices=sorted(prefill.FILLS),
                      help="Store model.face_prefill in the file: the prefill its readers use on "
                      "fit='auto''s aligned face canvases (default: the run's own).")
  parser.add_argument('--overwrite', action='store_true', help='Replace an existing --out.')
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  options = parse_args(sys.argv[1:] if argv is None else argv)
  from define_jax.model import checkpoints  # Orbax loads slowly: not for --help.
  from define_jax.runtime import console

  def export() -> str:
    check_model_out(options.out, options.overwrite)
    variables, config, step = checkpoints.load_model(options.workdir)
    if config['model'].get('face_template') is None:  # The template fit='auto' aligns to.
      from define_jax.faces import faces  # pylint: disable=g-import-not-at-top
      config = {**config, 'model': {**config['model'],
                                    'face_template': faces.FACE_TEMPLATE.tolist()}}
    if options.face_prefill:
      config = {**config, 'model': {**config['model'], 'face_prefill': options.face_prefill}}
      network.validate_model(config['model'], '--face_prefill: model.')
    try:
      size = model_file.write_model_file(options.out, variables, config, step, options.dtype)
    except OSError as error:
      raise ValueError(f'Cannot write --out {options.out}: {error.strerror or error} '
                       f'({error.filename}).') from error
    return f'Wrote {options.out} ({size / 2**20:.1f} MiB, step {step}, {options.dtype} weights).'

  try:
    with output_files.terminate_as_interrupt():  # The temporary file is removed.
      return console.exit_status(export)
  except KeyboardInterrupt:
    print('Interrupted; nothing was written.', file=sys.stderr)
    return console.INTERRUPTED_STATUS


def check_model_out(out: str, overwrite: bool) -> None:
  """ValueError, before anything is read, unless a model file can be written at `out`."""
  folder = os.path.dirname(os.path.abspath(out))
  if os.path.isdir(out):
    raise ValueError(f'--out {out} is a directory; give a file name, e.g. '
                     f'{os.path.join(out, "model" + model_file.SUFFIX)}.')
  if not out.endswith(model_file.SUFFIX):
    raise ValueError(f'--out {out}: the model file name must end in {model_file.SUFFIX}.')
  if not os.path.isdir(folder):
    raise ValueError(f'--out {out}: the folder {folder} does not exist.')
  if not os.access(folder, os.W_OK):
    raise ValueError(f'--out {out}: the folder {folder} is not writable.')
  if os.path.exists(out) and not overwrite:
    raise ValueError(f'--out {out} exists; pass --overwrite to replace it.')


if __name__ == '__main__':
  sys.exit(main())
