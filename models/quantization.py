"""Fake quantization that follows the firmware's int8 scheme, for quantization-aware training (QAT).

The scheme (the same as TensorFlow Lite's int8 kernels, which the firmware matches bit for bit):
- weights: symmetric, per output channel, int8 in [-127, 127], zero point 0, scale = max|w| / 127;
- activations: asymmetric, per tensor, int8 in [-128, 127], the range always containing 0;
- batch norm folded into the convolutions first, ReLU fused (the clamp happens at the activation's int8 range).

`prepare_qat` turns a folded GapCnn into one whose forward pass sees exactly those roundings (straight-
through gradients); the float weights stay the trainable state. The explainer works unchanged on it:
`model.head.weight` returns the fake-quantized head weights, as the device's integer CAM uses.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from models.architectures import GapCnn

INT8_MIN, INT8_MAX = -128, 127
WEIGHT_MAX = 127  # symmetric weights never use -128, so that negating a weight cannot overflow


def activation_qparams(low: float, high: float) -> tuple[float, int]:
    """(scale, zero_point) of an asymmetric int8 tensor covering [low, high] (widened to include 0)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max((high - low) / (INT8_MAX - INT8_MIN), 1e-8)
    zero_point = int(round(INT8_MIN - low / scale))
    return scale, max(INT8_MIN, min(INT8_MAX, zero_point))


def weight_scales(weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel scales of symmetric int8 weights."""
    return weight.detach().abs().reshape(weight.shape[0], -1).amax(dim=1).clamp(min=1e-8) / WEIGHT_MAX


class SymmetricPerChannelInt8(nn.Module):
    """Weight parametrization: the weight as the firmware stores it (int8 times its channel's scale)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scales = weight_scales(weight)
        zero_points = torch.zeros(weight.shape[0], dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scales, zero_points, 0, -WEIGHT_MAX, WEIGHT_MAX)


class ActivationFakeQuant(nn.Module):
    """Rounds a tensor to asymmetric per-tensor int8; the range is an running min/max while training."""

    def __init__(self, momentum: float = 0.01):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("low", torch.tensor(float("inf")))
        self.register_buffer("high", torch.tensor(float("-inf")))

    @property
    def calibrated(self) -> bool:
        return bool(torch.isfinite(self.low))

    def observe(self, x: torch.Tensor) -> None:
        low, high = x.detach().min(), x.detach().max()
        if not self.calibrated:
            self.low.copy_(low), self.high.copy_(high)
        else:
            self.low.lerp_(low, self.momentum), self.high.lerp_(high, self.momentum)

    def qparams(self) -> tuple[float, int]:
        return activation_qparams(float(self.low), float(self.high))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.calibrated:
            self.observe(x)
        scale, zero_point = self.qparams()
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, INT8_MIN, INT8_MAX)


def prepare_qat(folded: GapCnn) -> GapCnn:
    """Insert the firmware's roundings into a batch-norm-folded GapCnn (in place; returns it).

    Quantized points: the input, every block's output after ReLU (max pooling keeps the scale), and every
    weight. The logits are left in float here; the exporter calibrates their scale.
    """
    if any(isinstance(m, nn.BatchNorm1d) for m in folded.features):
        raise ValueError("fold batch norm before quantization-aware training (models.architectures.fold_batch_norm)")
    layers: list[nn.Module] = [ActivationFakeQuant()]
    for module in folded.features:
        layers.append(module)
        if isinstance(module, nn.ReLU):
            layers.append(ActivationFakeQuant())
    folded.features = nn.Sequential(*layers)
    for module in [*folded.features, folded.head]:
        if isinstance(module, (nn.Conv1d, nn.Linear)):
            parametrize.register_parametrization(module, "weight", SymmetricPerChannelInt8())
    return folded


def activation_quantizers(model: GapCnn) -> list[ActivationFakeQuant]:
    """The input's quantizer, then each block output's, in order."""
    return [m for m in model.features if isinstance(m, ActivationFakeQuant)]


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, ActivationFakeQuant) for m in model.modules())


@torch.no_grad()
def calibrate(model: GapCnn, batches) -> None:
    """Set every activation range to the min/max seen over the batches (a running range takes over in training)."""
    for quantizer in activation_quantizers(model):
        quantizer.low.fill_(float("inf")), quantizer.high.fill_(float("-inf"))
    model.eval()
    for x in batches:
        _widen_ranges(model, x)


def _widen_ranges(model: GapCnn, x: torch.Tensor) -> None:
    for module in model.features:
        if isinstance(module, ActivationFakeQuant):
            low, high = x.min(), x.max()
            if module.calibrated:
                low, high = torch.minimum(low, module.low), torch.maximum(high, module.high)
            module.low.copy_(low), module.high.copy_(high)
            scale, zero_point = module.qparams()
            x = torch.fake_quantize_per_tensor_affine(x, scale, zero_point, INT8_MIN, INT8_MAX)
        else:
            x = module(x)
