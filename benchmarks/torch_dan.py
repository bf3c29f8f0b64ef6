"""A PyTorch twin of one DAN stage, for the side-by-side speed benchmark.

Same layers as ``jaxmarks.models.dan.DANStage`` (Kowalski, Naruniec and Trzcinski,
"Deep Alignment Network", CVPRW 2017): four pairs of 3x3 convolutions without bias
(``base_width * (1, 2, 4, 8)`` channels), each followed by BatchNorm (momentum 0.9 in
Flax's convention = 0.1 in PyTorch's, epsilon 1e-4) and ReLU, 2x2 max pooling after
each pair, dropout, a dense layer without bias + BatchNorm + ReLU, and the dense output
layer scaled by ``output_scale`` and added to the mean shape. The input is standardised
per image, and the loss is the mean inter-ocular-normalised point error, as in
``dan.loss_fn_for``.

``load_flax_params`` copies a Flax stage's parameters and BatchNorm statistics into the
twin, so a test can check that both compute the same function; the benchmark then
times both on the same batch. PyTorch is an optional peer (``torch`` CPU build, see
``benchmarks/dan_speed.py``); this module is never imported by the library.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class TorchDANStage(nn.Module):
  """``(B, 1, 112, 112)`` images -> ``(B, K, 2)`` landmarks in crop pixels."""

  def __init__(self, mean_shape, base_width: int = 64, fc_units: int = 256,
               dropout_rate: float = 0.5, output_scale: float = 14.0, image_size: int = 112,
               in_channels: int = 1):
    super().__init__()
    mean_shape = np.asarray(mean_shape, np.float32)
    self.num_points = mean_shape.shape[0]
    self.output_scale = float(output_scale)
    self.register_buffer("mean_shape", torch.from_numpy(mean_shape))
    layers: list[nn.Module] = []
    cin = in_channels
    for mult in (1, 2, 4, 8):
      for _ in range(2):
        cout = base_width * mult
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                   nn.BatchNorm2d(cout, eps=1e-4, momentum=0.1), nn.ReLU(inplace=True)]
        cin = cout
      layers.append(nn.MaxPool2d(2))
    self.features = nn.Sequential(*layers)
    side = image_size // 16
    self.dropout = nn.Dropout(dropout_rate)
    self.fc1 = nn.Linear(cin * side * side, fc_units, bias=False)
    self.bn_fc1 = nn.BatchNorm1d(fc_units, eps=1e-4, momentum=0.1)
    self.fc2 = nn.Linear(fc_units, 2 * self.num_points)

  def forward(self, images: torch.Tensor) -> torch.Tensor:
    b = images.shape[0]
    flat = images.reshape(b, -1)
    mean = flat.mean(dim=1).view(b, 1, 1, 1)
    std = flat.std(dim=1, unbiased=False).view(b, 1, 1, 1)
    x = (images - mean) / torch.clamp(std, min=1e-3)
    x = self.features(x)
    # Flatten in NHWC order, as Flax does, so that the dense weights are the same.
    x = x.permute(0, 2, 3, 1).reshape(b, -1)
    x = torch.relu(self.bn_fc1(self.fc1(self.dropout(x))))
    out = self.fc2(x) * self.output_scale
    return self.mean_shape[None] + out.view(b, self.num_points, 2)


def inter_ocular_loss(pred: torch.Tensor, target: torch.Tensor, left: int,
                      right: int) -> torch.Tensor:
  """Mean over the batch of the point error normalised by ``|target[left] - target[right]|``
  (``pred``, ``target``: ``(B, K, 2)``)."""
  err = torch.linalg.norm(pred - target, dim=-1).mean(dim=-1)
  norm = torch.linalg.norm(target[:, left] - target[:, right], dim=-1)
  return (err / norm).mean()


def twin_of(dan_model, params, model_state) -> TorchDANStage:
  """The twin of stage 1 of a Flax ``jaxmarks.models.dan.DAN`` with its variables
  (``params`` and ``model_state`` of the whole model) copied in."""
  scale = dan_model.output_scale
  twin = TorchDANStage(np.asarray(dan_model.mean_shape, np.float32),
                       base_width=dan_model.base_width, fc_units=dan_model.fc_units,
                       dropout_rate=dan_model.dropout_rate,
                       output_scale=dan_model.image_size / 8 if scale is None else scale,
                       image_size=dan_model.image_size)
  load_flax_params(twin, params["stage1"], model_state["batch_stats"]["stage1"])
  return twin


def load_flax_params(twin: TorchDANStage, params, batch_stats) -> None:
  """Copies one Flax ``DANStage``'s ``params`` and ``batch_stats`` (the stage's own
  sub-dicts, e.g. ``params["stage1"]``) into ``twin``."""
  convs = [m for m in twin.features if isinstance(m, nn.Conv2d)]
  bns = [m for m in twin.features if isinstance(m, nn.BatchNorm2d)]
  names = [f"conv{b + 1}_{j + 1}" for b in range(4) for j in range(2)]
  t = lambda a: torch.from_numpy(np.array(a, np.float32))
  with torch.no_grad():
    for name, conv, bn in zip(names, convs, bns):
      conv.weight.copy_(t(params[name]["kernel"]).permute(3, 2, 0, 1))  # HWIO -> OIHW
      bn_name = "bn" + name[len("conv"):]
      bn.weight.copy_(t(params[bn_name]["scale"]))
      bn.bias.copy_(t(params[bn_name]["bias"]))
      bn.running_mean.copy_(t(batch_stats[bn_name]["mean"]))
      bn.running_var.copy_(t(batch_stats[bn_name]["var"]))
    twin.fc1.weight.copy_(t(params["fc1"]["kernel"]).T)
    twin.bn_fc1.weight.copy_(t(params["bn_fc1"]["scale"]))
    twin.bn_fc1.bias.copy_(t(params["bn_fc1"]["bias"]))
    twin.bn_fc1.running_mean.copy_(t(batch_stats["bn_fc1"]["mean"]))
    twin.bn_fc1.running_var.copy_(t(batch_stats["bn_fc1"]["var"]))
    twin.fc2.weight.copy_(t(params["fc2"]["kernel"]).T)
    twin.fc2.bias.copy_(t(params["fc2"]["bias"]))
