"""How good a saliency trace is: fidelity to a teacher's trace, localization on the beat, faithfulness.

All functions take (N, L) traces (numpy or torch) and return one value per example, so callers can
average, take medians or look at the worst beats.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata

QRS_HALF_WIDTH_S = 0.075  # the classified beat's QRS: R peak +- 75 ms


def _rows(traces) -> np.ndarray:
    array = traces.detach().cpu().numpy() if isinstance(traces, torch.Tensor) else np.asarray(traces)
    return np.atleast_2d(array).astype(np.float64)


def cosine_similarity(a, b) -> np.ndarray:
    a, b = _rows(a), _rows(b)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, (a * b).sum(axis=1) / np.maximum(norms, 1e-12), 0.0)


def pearson_r(a, b) -> np.ndarray:
    a, b = _rows(a), _rows(b)
    return cosine_similarity(a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True))


def top_k_iou(a, b, fraction: float = 0.1) -> np.ndarray:
    """Intersection over union of the most salient `fraction` of samples of each trace."""
    a, b = _rows(a), _rows(b)
    k = max(1, int(round(fraction * a.shape[1])))
    top_a = np.argsort(-a, axis=1, kind="stable")[:, :k]
    top_b = np.argsort(-b, axis=1, kind="stable")[:, :k]
    intersection = np.array([len(np.intersect1d(x, y)) for x, y in zip(top_a, top_b)])
    return intersection / (2 * k - intersection)


def qrs_mask(length: int, centre: int, fs: float, half_width_s: float = QRS_HALF_WIDTH_S) -> np.ndarray:
    """Boolean mask of the samples within half_width_s of the beat's R peak."""
    reach = int(round(half_width_s * fs))
    mask = np.zeros(length, dtype=bool)
    mask[max(0, centre - reach): centre + reach + 1] = True
    return mask


def pointing_game(traces, mask: np.ndarray) -> np.ndarray:
    """1 where the trace's arg-max lies inside the mask (the classified beat's QRS), else 0."""
    traces = _rows(traces)
    return mask[traces.argmax(axis=1)].astype(np.float64)


def localization_auc(traces, mask: np.ndarray) -> np.ndarray:
    """ROC-AUC of the trace as a detector of the masked samples (0.5 = no better than chance)."""
    traces = _rows(traces)
    positives, negatives = int(mask.sum()), int((~mask).sum())
    ranks = rankdata(traces, axis=1)  # ties share their mean rank
    return (ranks[:, mask].sum(axis=1) - positives * (positives + 1) / 2) / (positives * negatives)


def deletion_insertion(model: torch.nn.Module, x: torch.Tensor, traces, target: torch.Tensor,
                       steps: int = 20, channels: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Areas under the deletion and insertion curves (Petsiuk et al., BMVC 2018), per example.

    Deletion zeroes the most salient samples first and follows the target's probability (or output, for
    one-output models): a faithful trace makes it fall fast (small area). Insertion starts from zeros and
    restores the most salient samples first: a faithful trace makes it rise fast (large area). `channels`
    limits the perturbation to those input channels (e.g. the signal, not a position marker).
    """
    traces = _rows(traces)
    n, _, length = x.shape
    channels = list(range(x.shape[1])) if channels is None else channels
    order = torch.from_numpy(np.argsort(-traces, axis=1, kind="stable").copy())
    deletion, insertion = np.zeros((n, steps + 1)), np.zeros((n, steps + 1))
    model.eval()
    with torch.no_grad():
        for step in range(steps + 1):
            count = int(round(step / steps * length))
            keep = torch.ones(n, length)
            keep.scatter_(1, order[:, :count], 0.0)
            for curve, visible in ((deletion, keep), (insertion, 1.0 - keep)):
                perturbed = x.clone()
                perturbed[:, channels] = x[:, channels] * visible[:, None, :]
                curve[:, step] = _score(model(perturbed), target)
    return np.trapezoid(deletion, dx=1 / steps, axis=1), np.trapezoid(insertion, dx=1 / steps, axis=1)


def _score(outputs: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    if outputs.shape[1] == 1:
        return outputs[:, 0].numpy()
    return torch.softmax(outputs, dim=1).gather(1, target[:, None])[:, 0].numpy()
