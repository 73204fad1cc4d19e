"""notebooks/inference.ipynb runs top to bottom against a checkpoint this test session trains."""

import os

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image

from conftest import REPO_ROOT
from conftest import astronaut


NOTEBOOK = os.path.join(REPO_ROOT, 'notebooks', 'inference.ipynb')


@pytest.mark.slow
def test_inference_notebook_runs(tiny_checkpoint, tmp_path, monkeypatch):
  photo = tmp_path / 'face.jpg'
  Image.fromarray((astronaut(150, 120) * 255).astype(np.uint8)).save(photo)
  monkeypatch.setenv('DEFINE_CHECKPOINT', tiny_checkpoint)
  monkeypatch.setenv('DEFINE_IMAGE', str(photo))
  # The kernel imports define_jax from this checkout, installed or not.
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join(filter(None, [REPO_ROOT,
                                                                 os.environ.get('PYTHONPATH')])))
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  assert not any(cell.get('outputs') for cell in notebook.cells), 'commit the notebook cleared'
  client = NotebookClient(notebook, timeout=120, kernel_name='python3',
                          resources={'metadata': {'path': os.path.dirname(NOTEBOOK)}})
  client.execute()
  outputs = [output for cell in notebook.cells for output in cell.get('outputs', [])]
  text = ''.join(output.get('text', '') for output in outputs)
  assert 'Restored step 2' in text and 'photo size: (120, 150)' in text
  assert any('image/png' in output.get('data', {}) for output in outputs)
