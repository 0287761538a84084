"""The one architecture family of the zoo: a 1D CNN whose head is global average pooling + one linear layer.

With that head the class activation map (head weights applied to the last block's feature maps) equals
Grad-CAM at the last block, so the explanation is exact and cheap enough to compute on a microcontroller.
"""

from __future__ import annotations

import torch
from torch import nn


class GapCnn(nn.Module):
    """Conv1d-BatchNorm-ReLU blocks (max-pool 2 between them), then global average pooling and a linear layer."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], kernel_size: int, n_outputs: int):
        super().__init__()
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


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
