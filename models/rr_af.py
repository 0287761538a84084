"""An RR-only atrial fibrillation detector: logistic regression on RR-irregularity features.

The classical baseline every AF model is compared with (sdk.data.rr_features computes its inputs). It reads beat
times only, so it can learn from databases that hold no signal (the MIT-BIH AF Database's beat lists) and it does
not care which device recorded the ECG.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

L2 = 1e-3


class RrLogistic(nn.Module):
    """Standardised features -> (non-AF, AF) logits; the standardisation is part of the weights."""

    def __init__(self, n_features: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.linear = nn.Linear(n_features, 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.mean) / self.std)


def fit_rr_logistic(features: np.ndarray, is_af: np.ndarray, groups: np.ndarray) -> RrLogistic:
    """Weighted maximum likelihood (L-BFGS) in which every record counts the same, however long it is: a 10-h
    Holter must not drown a half-hour record with frequent ectopy."""
    x = torch.from_numpy(np.asarray(features, np.float32))
    y = torch.from_numpy(np.asarray(is_af, np.int64))
    _, index, counts = np.unique(groups, return_inverse=True, return_counts=True)
    weights = torch.from_numpy((1.0 / counts[index]).astype(np.float32))
    model = RrLogistic(x.shape[1])
    model.mean.copy_(x.mean(0))
    model.std.copy_(x.std(0).clamp_min(1e-6))
    optimizer = torch.optim.LBFGS(model.linear.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = (nn.functional.cross_entropy(model(x), y, reduction="none") * weights).sum() / weights.sum()
        value = value + L2 * model.linear.weight.pow(2).sum()
        value.backward()
        return value
    optimizer.step(loss)
    return model.eval()
