"""The one architecture family of the zoo: a 1D CNN whose head is global average pooling + one linear layer.

With that head the class activation map (head weights applied to the last block's feature maps) equals
Grad-CAM at the last block, so the explanation is exact and cheap enough to compute on a microcontroller.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn


class GapCnn(nn.Module):
    """Conv1d-BatchNorm-ReLU blocks (max-pool 2 between them), then global average pooling and a linear layer."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], kernel_size: int, n_outputs: int):
        super().__init__()
        self.widths = tuple(widths)
        layers: list[nn.Module] = []
        previous = in_channels
        for i, width in enumerate(widths):
            layers += [
                nn.Conv1d(previous, width, kernel_size, padding=kernel_size // 2, bias=False),
                nn.BatchNorm1d(width),
                nn.ReLU(),
            ]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool1d(2))
            previous = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(previous, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=-1))


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Model outputs (logits, or heart rate in bpm) for a stack of inputs."""
    model.eval()
    outputs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            outputs.append(model(torch.from_numpy(np.ascontiguousarray(x[i: i + batch_size]))).numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0,))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def nonzero_parameter_count(model: nn.Module) -> int:
    return sum(int((p != 0).sum()) for p in model.parameters())


def convolutions(model: GapCnn) -> list[nn.Conv1d]:
    return [m for m in model.features if isinstance(m, nn.Conv1d)]


def multiply_accumulates(model: GapCnn, window: int) -> int:
    """MACs of one inference of a float GapCnn (see gapcnn_macs)."""
    blocks = []
    for module in model.features:
        if isinstance(module, nn.Conv1d):
            blocks.append([module.weight.numel(), False])
        elif isinstance(module, nn.MaxPool1d):
            blocks[-1][1] = True
    return gapcnn_macs([tuple(b) for b in blocks], model.head.weight.numel(), window)


def gapcnn_macs(blocks: list[tuple[int, bool]], head_weights: int, window: int) -> int:
    """MACs of one inference: each convolution's (weight count, max-pool after it) uses every weight once per output
    sample, the length halving after each pool; the head uses each weight once."""
    total, length = 0, window
    for weights, pool_after in blocks:
        total += weights * length
        length //= 2 if pool_after else 1
    return total + head_weights


def fold_batch_norm(model: GapCnn) -> GapCnn:
    """A copy with every batch norm folded into the convolution before it (a bias appears, the norm becomes Identity).

    The inference function is unchanged; this is the form the int8 firmware and quantization-aware training use.
    """
    folded = copy.deepcopy(model).eval()
    layers = list(folded.features)
    for i, module in enumerate(layers):
        if isinstance(module, nn.BatchNorm1d):
            conv = layers[i - 1]
            scale = module.weight.detach() / torch.sqrt(module.running_var + module.eps)
            bias = module.bias.detach() - module.running_mean * scale
            if conv.bias is not None:
                bias = bias + conv.bias.detach() * scale
            conv.weight = nn.Parameter(conv.weight.detach() * scale[:, None, None])
            conv.bias = nn.Parameter(bias)
            layers[i] = nn.Identity()
    folded.features = nn.Sequential(*layers)
    return folded
