"""The face model shipped in the package: loads by default everywhere and beats diffusion on
a public-domain face it never saw (scikit-image's astronaut)."""

import os

import numpy as np
import pytest
from PIL import Image

from define_jax import evaluate
from define_jax import inpaint
from define_jax.data import masks
from define_jax.inference import DEFAULT_MODEL, PRETRAINED_MODEL, PRETRAINED_MODELS, Inpainter
from define_jax.inference import baselines
from define_jax.tools import model_card_figures


@pytest.fixture(scope='module')
def pretrained():
  return Inpainter.pretrained()


def psnr(results, truth):
  return -10 * np.log10(np.mean((results - truth) ** 2, axis=(1, 2, 3)))


def test_packaged_models_fit_the_budget_and_each_has_its_card():
  folder = os.path.dirname(PRETRAINED_MODEL)
  shipped = sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))
  assert shipped <= 32 * 2**20  # Everything under define_jax/pretrained/, cards included.
  assert PRETRAINED_MODEL == PRETRAINED_MODELS[DEFAULT_MODEL]
  for name, path in PRETRAINED_MODELS.items():
    assert path.is_file() and path.name == f'{name}.msgpack'
    card = os.path.join(folder, f'{name.upper()}_MODEL_CARD.md')
    assert os.path.isfile(card) and f'`{name}.msgpack`' in open(card, encoding='utf-8').read()


def test_packaged_model_is_complete(pretrained):
  assert pretrained.image_size in (128, 256) and pretrained.config.model.layers == 7
  assert pretrained.config.model.prefill == 'biharmonic' and pretrained.config.optim.ema_decay > 0


def test_packaged_models_load_by_name_and_a_path_of_that_name_wins(tmp_path, monkeypatch):
  for name in PRETRAINED_MODELS:
    by_name, packaged = Inpainter.load(name), Inpainter.pretrained(name)
    assert (by_name.image_size, by_name.step) == (packaged.image_size, packaged.step)
  with pytest.raises(ValueError, match='No packaged model .faces64.; the packaged models are '
                     + ', '.join(PRETRAINED_MODELS)):
    Inpainter.pretrained('faces64')
  monkeypatch.chdir(tmp_path)
  os.mkdir(DEFAULT_MODEL)  # A workdir that happens to share the name: it is what is loaded.
  with pytest.raises(FileNotFoundError, match=DEFAULT_MODEL):
    Inpainter.load(DEFAULT_MODEL)


def test_packaged_model_beats_telea_and_matches_biharmonic_on_the_astronaut(pretrained):
  """A face framed unlike the training faces (hair, background, space suit): the model is
  clearly better than Telea and level with biharmonic (on held-out UTKFace faces it beats
  both; see the model card)."""
  face = model_card_figures.astronaut_face(128)
  rng = np.random.default_rng(0)
  known = np.stack([masks.generate_irregular_mask(rng, 128, 128, (0.2, 0.5))
                    for _ in range(12)]).astype(np.float32)[..., None]
  faces = np.repeat(face[None], len(known), axis=0)
  ours = pretrained.inpaint_arrays(faces, known)
  kept = np.broadcast_to(known, ours.shape) == 1
  np.testing.assert_array_equal(ours[kept], faces[kept])
  telea = np.stack([baselines.telea(face, k) for k in known])
  biharmonic = np.stack([baselines.biharmonic(face, k) for k in known])
  assert psnr(ours, face).mean() > psnr(telea, face).mean() + 1.0
  assert psnr(ours, face).mean() > psnr(biharmonic, face).mean() - 0.5


def test_cli_and_evaluate_use_the_packaged_model_by_default(tmp_path, capsys):
  face = (model_card_figures.astronaut_face(160) * 255).astype(np.uint8)
  Image.fromarray(face).save(tmp_path / 'face.png')
  mask = ((1 - model_card_figures.astronaut_holes(160)[..., 0]) * 255).astype(np.uint8)
  Image.fromarray(mask).save(tmp_path / 'mask.png')
  out = tmp_path / 'filled.png'
  assert inpaint.main(['--image', str(tmp_path / 'face.png'), '--mask', str(tmp_path / 'mask.png'),
                       '--polarity', 'hole_white', '--out', str(out)]) == 0
  filled = np.asarray(Image.open(out))
  assert filled.shape == face.shape and not np.array_equal(filled, face)
  np.testing.assert_array_equal(filled[mask == 0], face[mask == 0])
  faces = tmp_path / 'faces'
  faces.mkdir()
  Image.fromarray(face).save(faces / 'a.png')
  result = evaluate.run(['--image_dir', str(faces), '--num_images', '1',
                         '--out', str(tmp_path / 'eval')])
  assert f'packaged model {DEFAULT_MODEL}' in result['markdown']
  assert result['out_dir'] == str(tmp_path / 'eval')
