"""A classifier's decision layer fitted in closed form on its frozen backbone (seed method 6, after Zhang et al.
2021, "Non-Gradient Manifold Neural Network": no gradient steps, only linear solves).

Every zoo model ends in global average pooling and one linear layer, so its head is a linear decision layer on the
pooled embeddings. Refitting it keeps the class activation map exact (the head stays linear over the same feature
maps) and costs a few small linear solves, cheap enough to do per patient.

The fit, one-vs-rest over the classes, each example weighted by 1 / (its class's count) ** class_weight_power:
1. ridge regression of the ±1 class targets on the standardised embeddings;
2. an adaptive SVM: the squared-hinge SVM solved by alternating closed-form steps, each a weighted ridge regression
   on the examples that violate the margin under the previous solution (the active set adapts; the rest no longer
   pull the boundary).
The seed's flexible Stiefel-manifold constraint on the decision layer is not part of this fit.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from sdk.errors import HeartSightError

RIDGE = 1.0  # on standardised embeddings; the bias is not penalised
SVM_STEPS = 5
MIN_PER_CLASS = 5  # a class with fewer labelled examples cannot be refitted


def pooled_embeddings(model: nn.Module, x: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """(n, channels): the backbone's last feature maps averaged over time, what the head reads."""
    model.eval()
    parts = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            parts.append(model.features(torch.from_numpy(np.ascontiguousarray(x[i: i + batch_size]))).mean(dim=-1).numpy())
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, model.head.in_features))


def fit_head(embeddings: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], class_weight_power: float = 0.5,
             ridge: float = RIDGE, svm_steps: int = SVM_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """(weight (classes, channels), bias (classes,)) of a linear head on these embeddings, in closed form."""
    embeddings, labels = np.asarray(embeddings, np.float64), np.asarray(labels)
    counts = np.bincount(labels, minlength=len(classes)) if len(labels) else np.zeros(len(classes), int)
    scarce = [f"{name} ({count})" for name, count in zip(classes, counts) if count < MIN_PER_CLASS]
    if scarce:
        raise HeartSightError(f"too few labelled examples to fit the head: {', '.join(scarce)}; every class needs at "
                              f"least {MIN_PER_CLASS}")
    mean, spread = embeddings.mean(axis=0), embeddings.std(axis=0) + 1e-6
    design = np.c_[(embeddings - mean) / spread, np.ones(len(embeddings))]
    weights = 1.0 / counts[labels] ** class_weight_power
    weights /= weights.mean()
    targets = -np.ones((len(labels), len(classes)))
    targets[np.arange(len(labels)), labels] = 1.0
    penalty = ridge * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0

    def ridge_fit(rows: np.ndarray, target: np.ndarray) -> np.ndarray:
        weighted = design[rows] * weights[rows, None]
        return np.linalg.solve(weighted.T @ design[rows] + penalty, weighted.T @ target)

    solution = ridge_fit(np.ones(len(labels), bool), targets)
    for _ in range(svm_steps):
        margins = targets * (design @ solution)
        solution = np.stack([ridge_fit(margins[:, k] < 1, targets[margins[:, k] < 1, k])
                             for k in range(len(classes))], axis=1)
    weight = (solution[:-1] / spread[:, None]).T  # undo the standardisation: the head reads the raw embeddings
    return weight, solution[-1] - weight @ mean


def with_head(model: nn.Module, weight: np.ndarray, bias: np.ndarray) -> nn.Module:
    """A copy of the model whose head is the given linear layer (the backbone shared in value, not in memory)."""
    refitted = copy.deepcopy(model).eval()
    if refitted.head.weight.shape != weight.shape:
        raise HeartSightError(f"a head of shape {weight.shape} does not fit this backbone's "
                              f"{tuple(refitted.head.weight.shape)} head")
    with torch.no_grad():
        refitted.head.weight.copy_(torch.from_numpy(weight))
        refitted.head.bias.copy_(torch.from_numpy(bias))
    return refitted
