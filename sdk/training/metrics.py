"""The scores HeartSight reports: EC57-style per-class Se/+P/F1, and heart-rate errors in bpm."""

from __future__ import annotations

import numpy as np


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, classes: tuple[str, ...]) -> dict:
    """Accuracy and, per class, sensitivity (Se), positive predictivity (+P), F1 and the true count."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    per_class = {}
    for k, name in enumerate(classes):
        tp = int(np.sum((y_true == k) & (y_pred == k)))
        actual, predicted = int(np.sum(y_true == k)), int(np.sum(y_pred == k))
        se = tp / actual if actual else 0.0
        ppv = tp / predicted if predicted else 0.0
        f1 = 2 * se * ppv / (se + ppv) if se + ppv else 0.0
        per_class[name] = {"se": round(se, 4), "ppv": round(ppv, 4), "f1": round(f1, 4), "n": actual}
    accuracy = float(np.mean(y_true == y_pred)) if len(y_true) else 0.0
    return {"accuracy": round(accuracy, 4), "n": int(len(y_true)), "per_class": per_class,
            "confusion": confusion_matrix(y_true, y_pred, len(classes)).tolist()}


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows: reference class; columns: predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def regression_report(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    error = np.asarray(y_pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64)
    return {"mae_bpm": round(float(np.mean(np.abs(error))), 3), "rmse_bpm": round(float(np.sqrt(np.mean(error ** 2))), 3),
            "n": int(len(error))}
