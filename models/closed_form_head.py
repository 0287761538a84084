"""A classifier's decision layer fitted in closed form on its frozen backbone (seed method 6, after Zhang et al.
2021, "Non-Gradient Manifold Neural Network": no gradient steps, only linear solves).

Every zoo model ends in global average pooling and one linear layer, so its head is a linear decision layer on the
pooled embeddings. Refitting it keeps the class activation map exact (the head stays linear over the same feature
maps) and costs a few small linear solves, cheap enough to do per patient.

The fit, one-vs-rest over the classes, each example weighted by 1 / (its class's count) ** class_weight_power:
1. ridge regression of the ±1 class targets on the centred embeddings (scaled by one common factor);
2. an adaptive SVM: the squared-hinge SVM solved by alternating closed-form steps, each a weighted ridge regression
   on the examples that violate the margin under the previous solution (the active set adapts; the rest no longer
   pull the boundary).
3. one temperature, so the head's softmax is a calibrated probability (the alert policy reads it as confidence):
   the scalar that minimises the negative log-likelihood of the labels, found by a bounded 1-D search.
With a rank below the number of classes, the seed's flexible Stiefel manifold comes first: the layer reads the
embeddings through an orthonormal projection found by alternating closed-form steps (flexible_stiefel_projection).
With a rank equal to the number of classes a linear layer already has that many directions, so the projection is
the identity in effect (||P W|| = ||W||): the constraint only regularises when it reduces the rank.

Per patient (`patient_head`): the population's examples and the patient's labelled beats, each of the patient's
counted patient_weight times. A model's card records the weight and class-weight power chosen for it on DS1 alone
(benchmarks/patient_adaptive.py: each DS1 patient adapted on the first 5 minutes of their own record, the other DS1
patients as the population); PATIENT_WEIGHT and PATIENT_CLASS_WEIGHT_POWER are the defaults without one.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from sdk.errors import HeartSightError

RIDGE = 1.0  # on the centred, scaled embeddings; the bias is not penalised
SVM_STEPS = 5
MIN_PER_CLASS = 5  # a class with fewer labelled examples cannot be refitted
PATIENT_WEIGHT = 100.0
PATIENT_CLASS_WEIGHT_POWER = 0.5
PATIENT_SVM_STEPS = 0


def pooled_embeddings(model: nn.Module, x: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """(n, channels): the backbone's last feature maps averaged over time, what the head reads."""
    model.eval()
    parts = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            parts.append(model.features(torch.from_numpy(np.ascontiguousarray(x[i: i + batch_size]))).mean(dim=-1).numpy())
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, model.head.in_features))


def fit_head(embeddings: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], class_weight_power: float = 0.5,
             ridge: float = RIDGE, svm_steps: int = SVM_STEPS, sample_weight: np.ndarray | None = None,
             rank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(weight (classes, channels), bias (classes,)) of a linear head on these embeddings, in closed form.

    sample_weight (default 1) counts an example that many times, in its class's count too: how one patient's
    labelled beats outweigh the population's. rank (below the number of classes): the decision layer reads the
    embeddings through an orthonormal projection to that many dimensions (flexible_stiefel_projection); with as
    many dimensions as classes the projection cannot change a linear decision and is left out."""
    embeddings, labels = np.asarray(embeddings, np.float64), np.asarray(labels)
    present = np.bincount(labels, minlength=len(classes)) if len(labels) else np.zeros(len(classes), int)
    scarce = [f"{name} ({count})" for name, count in zip(classes, present) if count < MIN_PER_CLASS]
    if scarce:
        raise HeartSightError(f"too few labelled examples to fit the head: {', '.join(scarce)}; every class needs at "
                              f"least {MIN_PER_CLASS}")
    if rank is not None and not 1 <= rank <= len(classes):
        raise HeartSightError(f"rank {rank} must be between 1 and the number of classes ({len(classes)})")
    sample_weight = np.ones(len(labels)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    counts = np.bincount(labels, weights=sample_weight, minlength=len(classes))
    # Centred, and scaled by one factor for all channels, not per channel: the ridge penalty then acts in the units
    # the int8 head is quantized in, so no weight grows large on a channel that hardly varies (one such weight makes
    # the device's int8 head disagree with the float one on whole records).
    mean = embeddings.mean(axis=0)
    centred = embeddings - mean
    spread = centred.std() + 1e-6
    scaled = centred / spread
    weights = sample_weight / counts[labels] ** class_weight_power
    weights /= weights.mean()
    targets = -np.ones((len(labels), len(classes)))
    targets[np.arange(len(labels)), labels] = 1.0
    projection = None if rank is None or rank == len(classes) else \
        flexible_stiefel_projection(scaled, targets, weights, rank, ridge)
    features = scaled if projection is None else scaled @ projection
    # The products in float32, twice BLAS's float64 speed (their sums of up to 10^5 terms keep 4-5 digits, ample for
    # these regularised solves); the sums of products and the solves in float64.
    design32 = np.ones((len(labels), features.shape[1] + 1), np.float32)  # the last column is the bias's
    design32[:, :-1] = features
    targets32 = targets.astype(np.float32)
    penalty = ridge * np.eye(design32.shape[1])
    penalty[-1, -1] = 0.0
    weighted = design32 * weights[:, None].astype(np.float32)
    gram = (weighted.T @ design32).astype(np.float64)
    moments = (weighted.T @ targets32).astype(np.float64)  # (features, classes)
    solution = np.linalg.solve(gram + penalty, moments)
    # Each SVM step refits class k on its margin violators. Between steps few examples enter or leave that set, so
    # each class's Gram matrix and moments are updated by those alone.
    active, grams, moments = np.ones(targets.shape, bool), [gram] * len(classes), moments.copy()
    for _ in range(svm_steps):
        violators = targets32 * (design32 @ solution.astype(np.float32)) < 1
        for k in range(len(classes)):
            entered, left = violators[:, k] & ~active[:, k], active[:, k] & ~violators[:, k]
            grams[k] = grams[k] + weighted[entered].T @ design32[entered] - weighted[left].T @ design32[left]
            moments[:, k] += weighted[entered].T @ targets32[entered, k] - weighted[left].T @ targets32[left, k]
            solution[:, k] = np.linalg.solve(grams[k] + penalty, moments[:, k])
        active = violators
    layer = solution[:-1] if projection is None else projection @ solution[:-1]
    weight = (layer / spread).T  # back to the raw embeddings, which the head reads
    bias = solution[-1] - weight @ mean
    temperature = calibrated_temperature(embeddings @ weight.T + bias, labels)
    return weight / temperature, bias / temperature


STIEFEL_STEPS = 10
FLEXIBILITY = 1.0  # how far the latent codes may move from the projected embeddings, against fitting the targets


def flexible_stiefel_projection(x: np.ndarray, targets: np.ndarray, weights: np.ndarray, rank: int,
                                ridge: float) -> np.ndarray:
    """P (channels, rank) with orthonormal columns (a point on the Stiefel manifold) for a decision layer that reads
    x @ P, by alternating closed-form steps on flexible latent codes F:
    1. the layer (W, b): weighted ridge regression of the targets on [x P, 1];
    2. the codes: F = argmin |T - F W - b|^2 + FLEXIBILITY |F - x P|^2, row by row (one small solve);
    3. the projection: P = argmin |F - x P|^2 over the Stiefel manifold, weighted: orthogonal Procrustes, U V^T from
       the SVD of x^T diag(a) F.
    Starts from the leading directions of the ridge solution."""
    weighted_x = x * weights[:, None]
    gram = weighted_x.T @ x + ridge * np.eye(x.shape[1])
    projection = np.linalg.svd(np.linalg.solve(gram, weighted_x.T @ targets), full_matrices=False)[0][:, :rank]
    for _ in range(STIEFEL_STEPS):
        codes = x @ projection
        design = np.c_[codes, np.ones(len(x))]
        penalty = ridge * np.eye(rank + 1)
        penalty[-1, -1] = 0.0
        layer = np.linalg.solve((design * weights[:, None]).T @ design + penalty, (design * weights[:, None]).T @ targets)
        w, b = layer[:-1], layer[-1]
        codes = (FLEXIBILITY * codes + (targets - b) @ w.T) @ np.linalg.inv(FLEXIBILITY * np.eye(rank) + w @ w.T)
        u, _, vt = np.linalg.svd(weighted_x.T @ codes, full_matrices=False)
        projection = u @ vt
    return projection


TEMPERATURE_EXAMPLES = 5000  # one scalar: an even sample of the examples fixes it


def calibrated_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """T minimising the mean negative log-likelihood of softmax(logits / T) at the labels."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    every = max(1, len(labels) // TEMPERATURE_EXAMPLES)
    logits, labels = logits[::every], labels[::every]
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[rows, labels].mean())
    return float(np.exp(minimize_scalar(nll, bounds=(-6.0, 6.0), method="bounded").x))


def patient_head(population: tuple[np.ndarray, np.ndarray], patient: tuple[np.ndarray, np.ndarray],
                 classes: tuple[str, ...], patient_weight: float = PATIENT_WEIGHT,
                 class_weight_power: float = PATIENT_CLASS_WEIGHT_POWER) -> tuple[np.ndarray, np.ndarray]:
    """A head for one patient: fitted on the population's (embeddings, labels) and the patient's, each of the
    patient's labelled beats counted patient_weight times."""
    (population_x, population_y), (patient_x, patient_y) = population, patient
    weights = np.r_[np.ones(len(population_y)), np.full(len(patient_y), float(patient_weight))]
    return fit_head(np.r_[population_x, patient_x], np.r_[population_y, patient_y], classes, class_weight_power,
                    svm_steps=PATIENT_SVM_STEPS, sample_weight=weights)


def with_head(model: nn.Module, weight: np.ndarray, bias: np.ndarray) -> nn.Module:
    """A copy of the model whose head is the given linear layer (the backbone shared in value, not in memory). A
    quantization-aware head keeps its parametrization: the new weight is what it quantizes."""
    refitted = copy.deepcopy(model).eval()
    head = refitted.head
    if head.weight.shape != weight.shape:
        raise HeartSightError(f"a head of shape {weight.shape} does not fit this backbone's {tuple(head.weight.shape)} head")
    stored = head.parametrizations.weight.original if parametrize.is_parametrized(head, "weight") else head.weight
    with torch.no_grad():
        stored.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))
    return refitted
