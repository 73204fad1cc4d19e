"""The naoto0804-style PyTorch reference: PConvUNet, VGG16 features, inpainting loss, train step.

naoto0804/pytorch-inpainting-with-partial-conv's net.py and loss.py, re-typed (the widths
made a parameter: `base_features` doubled per level up to `max_features`, 64 and 512 in the
reference, as in define_jax's models.py). The tests check define_jax's U-Net parameters and
VGG16 against it; `python -m define_jax.benchmark torch` times its train step
(time_train_step) beside define_jax's. Needs torch (the test extra); nothing in the compute core imports it.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from define_jax.benchmark import measurement
from define_jax.model import vgg
from define_jax.training import losses


class PartialConv(nn.Module):
  """Convolution of input * mask rescaled by the window's mask sum; the mask convolution
  is a frozen ones kernel over every input channel, as in the reference."""

  def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int, bias: bool):
    super().__init__()
    pad = (kernel_size - 1) // 2
    self.input_conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, pad, bias=bias)
    self.mask_conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, pad, bias=False)
    nn.init.kaiming_normal_(self.input_conv.weight, a=0, mode='fan_in')
    if bias:
      nn.init.zeros_(self.input_conv.bias)
    nn.init.constant_(self.mask_conv.weight, 1.0)
    self.mask_conv.weight.requires_grad_(False)

  def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    output = self.input_conv(x * mask)
    bias = 0.0 if self.input_conv.bias is None else self.input_conv.bias.view(1, -1, 1, 1)
    with torch.no_grad():
      mask_sum = self.mask_conv(mask)
      holes = mask_sum == 0
      mask_sum = mask_sum.masked_fill(holes, 1.0)
    output = ((output - bias) / mask_sum + bias).masked_fill(holes, 0.0)
    return output, (~holes).to(output.dtype)


class PCBActiv(nn.Module):
  """Partial convolution, BatchNorm, activation (naoto0804's PCBActiv)."""

  def __init__(self, in_ch: int, out_ch: int, bn: bool = True, sample: str = 'none-3',
               activ: str | None = 'relu', conv_bias: bool = False):
    super().__init__()
    kernel_size, stride = {'down-7': (7, 2), 'down-5': (5, 2), 'down-3': (3, 2),
                           'none-3': (3, 1)}[sample]
    self.conv = PartialConv(in_ch, out_ch, kernel_size, stride, conv_bias)
    if bn:
      self.bn = nn.BatchNorm2d(out_ch)
    if activ == 'relu':
      self.activation = nn.ReLU()
    elif activ == 'leaky':
      self.activation = nn.LeakyReLU(negative_slope=0.2)

  def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h, h_mask = self.conv(x, mask)
    if hasattr(self, 'bn'):
      h = self.bn(h)
    if hasattr(self, 'activation'):
      h = self.activation(h)
    return h, h_mask


class PConvUNet(nn.Module):
  """naoto0804's PConvUNet(layer_size); masks have the image's channels."""

  def __init__(self, layer_size: int = 7, input_channels: int = 3, base_features: int = 64,
               max_features: int = 512):
    super().__init__()
    self.layer_size = layer_size
    width = [input_channels] + [min(base_features * 2**i, max_features)
                                for i in range(layer_size)]
    for level in range(1, layer_size + 1):
      sample = 'down-7' if level == 1 else 'down-5' if level <= 3 else 'down-3'
      setattr(self, f'enc_{level}', PCBActiv(width[level - 1], width[level], bn=level > 1,
                                             sample=sample))
    for level in range(layer_size, 0, -1):
      last = level == 1
      setattr(self, f'dec_{level}', PCBActiv(
          width[level] + width[level - 1], width[level - 1], bn=not last,
          activ=None if last else 'leaky', conv_bias=last))

  def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    skips = [(x, mask)]
    for level in range(1, self.layer_size + 1):
      skips.append(getattr(self, f'enc_{level}')(*skips[-1]))
    h, h_mask = skips[-1]
    for level in range(self.layer_size, 0, -1):
      skip, skip_mask = skips[level - 1]
      h = torch.cat([F.interpolate(h, scale_factor=2, mode='nearest'), skip], dim=1)
      h_mask = torch.cat([F.interpolate(h_mask, scale_factor=2, mode='nearest'), skip_mask],
                         dim=1)
      h, h_mask = getattr(self, f'dec_{level}')(h, h_mask)
    return h, h_mask


class VGG16Features(nn.Module):
  """torchvision's vgg16().features[:17] (conv1_1 .. pool3, its state-dict keys), frozen;
  returns pool1, pool2, pool3 (naoto0804's VGG16FeatureExtractor)."""

  def __init__(self):
    super().__init__()
    layers, in_ch = [], 3
    for block in vgg.VGG16_BLOCKS:
      for out_ch in block:
        layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU(inplace=True)]
        in_ch = out_ch
      layers.append(nn.MaxPool2d(2, 2))
    self.features = nn.Sequential(*layers)
    self.requires_grad_(False)

  def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    pools, start = [], 0
    for end in (5, 10, 17):
      x = self.features[start:end](x)
      pools.append(x)
      start = end
    return tuple(pools)


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
  b, ch, h, w = features.shape
  features = features.reshape(b, ch, h * w)
  return torch.bmm(features, features.transpose(1, 2)) / (ch * h * w)


def inpainting_loss(weights: Mapping[str, float], extractor: VGG16Features, image: torch.Tensor,
                    mask: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
  """naoto0804's InpaintingLoss, weighted by define_jax's terms (losses.LOSS_PRESETS);
  total variation over the whole composite, as the reference computes it."""
  unknown = set(weights) - set(losses.LOSS_TERMS)
  if unknown:
    raise ValueError(f'Unknown loss weights {sorted(unknown)}; expected keys in '
                     f'{losses.LOSS_TERMS}.')
  comp = mask * image + (1 - mask) * output
  terms = {'l1': lambda: F.l1_loss(output, image),
           'valid': lambda: F.l1_loss(mask * output, mask * image),
           'hole': lambda: F.l1_loss((1 - mask) * output, (1 - mask) * image),
           'tv': lambda: (torch.mean(torch.abs(comp[:, :, :, :-1] - comp[:, :, :, 1:])) +
                          torch.mean(torch.abs(comp[:, :, :-1, :] - comp[:, :, 1:, :])))}
  total = sum(weight * terms[name]() for name, weight in weights.items()
              if weight and name in terms)
  if losses.needs_vgg(weights):
    feats_out, feats_comp, feats_gt = extractor(output), extractor(comp), extractor(image)
    for out, comp_f, gt in zip(feats_out, feats_comp, feats_gt):
      total = total + weights.get('perceptual', 0) * (F.l1_loss(out, gt) + F.l1_loss(comp_f, gt))
      gram_gt = gram_matrix(gt)
      total = total + weights.get('style', 0) * (
          F.l1_loss(gram_matrix(out), gram_gt) + F.l1_loss(gram_matrix(comp_f), gram_gt))
  return total


def make_train_step(model: PConvUNet, extractor: VGG16Features, weights: Mapping[str, float],
                    optimizer: torch.optim.Optimizer, autocast_dtype: torch.dtype | None
                    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
  """step(image, mask) -> loss: naoto0804's training iteration (the network sees the image
  and the mask, here with the mask's channel repeated), under autocast when a dtype is given."""
  device_type = next(model.parameters()).device.type

  def step(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.expand_as(image)
    with torch.autocast(device_type, dtype=autocast_dtype or torch.float32,
                        enabled=autocast_dtype is not None):
      output, _ = model(image, mask)
      loss = inpainting_loss(weights, extractor, image, mask, output)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss

  return step


def time_train_step(config: Any, steps: int, warmup: int, peak_tflops: float | None) -> dict:
  """Timing, FLOPs, utilisation and peak memory of make_train_step's step on one synthetic
  batch at config's settings (model, loss preset, batch size, dtype), on CUDA when
  available, for `python -m define_jax.benchmark torch`. VGG16 gets random weights: the
  speed does not depend on them."""
  model = config.model
  cuda = torch.cuda.is_available()
  device = torch.device('cuda' if cuda else 'cpu')
  # float32 as XLA computes it on GPUs by default: TF32 tensor cores for convs and matmuls.
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
  torch.backends.cudnn.benchmark = True  # Fixed shapes: pick the fastest algorithms once.
  torch.manual_seed(0)
  network = PConvUNet(model.layers, base_features=model.base_features,
                      max_features=model.max_features).to(device)
  extractor = VGG16Features().to(device)
  optimizer = torch.optim.Adam(network.parameters(), lr=config.optim.learning_rate)
  step = make_train_step(network, extractor, losses.get_loss_weights(config.loss.preset),
                         optimizer, torch.bfloat16 if model.dtype == 'bfloat16' else None)
  batch = measurement.synthetic_batch(config, 1)
  image, mask = (torch.from_numpy(np.ascontiguousarray(batch[k][0].transpose(0, 3, 1, 2)))
                 .to(device) for k in ('image', 'mask'))
  wait = lambda loss: torch.cuda.synchronize() if cuda else loss.item()

  start = time.perf_counter()
  measurement.timed_calls(lambda: step(image, mask), warmup, wait)
  warmup_s = time.perf_counter() - start
  wall, cpu = measurement.timed_calls(lambda: step(image, mask), steps, wait)
  with FlopCounterMode(display=False) as counter:
    loss = step(image, mask)
  name = torch.cuda.get_device_name(device) if cuda else 'cpu'
  return {
      **measurement.timing_summary('step', wall, cpu, config.optim.batch_size),
      'warmup_s': round(warmup_s, 1),
      'flops_per_step': counter.get_total_flops(),
      'platform': device.type,
      'device_kind': name,
      **measurement.utilisation(counter.get_total_flops(), statistics.median(wall),
                                measurement.peak_tflops(name, model.dtype, peak_tflops)),
      'peak_memory_mb': round(torch.cuda.max_memory_allocated(device) / 2**20 if cuda
                              else measurement.process_peak_memory_mb(), 1),
      'peak_memory_source': 'torch max_memory_allocated' if cuda else 'process max RSS',
      'loss_value': float(loss.detach()),
      'torch_version': torch.__version__,
  }
