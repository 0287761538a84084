"""What a compressed model costs and how well it keeps its teacher's explanation, measured on held-out beats."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.architectures import GapCnn, multiply_accumulates, nonzero_parameter_count, parameter_count
from models.registry import ModelSpec
from sdk.data.datasets import Dataset
from sdk.explain import ClassActivationMap
from sdk.explain import metrics as explain_metrics

EXPLANATION_BEATS_PER_CLASS = 250  # DS2 beats per class (all of a rarer class) scored for explanations
TOP_FRACTION = 0.1


def size_report(model: GapCnn, spec: ModelSpec) -> dict:
    """Parameters (all and non-zero), the firmware's int8 bytes (int8 weights + int32 biases after BN folding), MACs."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Linear))]
    weights = sum(m.weight.numel() for m in layers)
    biases = sum(m.weight.shape[0] for m in layers)
    return {"params": parameter_count(model), "params_nonzero": nonzero_parameter_count(model),
            "int8_bytes": weights + 4 * biases, "macs": multiply_accumulates(model, spec.input_length)}


def explanation_sample(dataset: Dataset, per_class: int = EXPLANATION_BEATS_PER_CLASS, seed: int = 0) -> Dataset:
    """A fixed, class-balanced sample of held-out beats (rare classes would vanish in a uniform sample)."""
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(members, min(per_class, len(members)), replace=False)
              for members in (np.flatnonzero(dataset.y == k) for k in np.unique(dataset.y))]
    return dataset.subset(np.sort(np.concatenate(chosen)))


def localization(model: nn.Module, x: torch.Tensor, fs: float) -> dict:
    """Pointing game and localization AUC of the model's own explanation against the classified beat's QRS."""
    traces = ClassActivationMap(model).attribute(x)
    mask = explain_metrics.qrs_mask(x.shape[-1], x.shape[-1] // 2, fs)
    return {"pointing_game": round(float(explain_metrics.pointing_game(traces, mask).mean()), 4),
            "loc_auc": round(float(explain_metrics.localization_auc(traces, mask).mean()), 4)}


def fidelity(teacher: nn.Module, student: nn.Module, x: torch.Tensor) -> dict:
    """Cosine and top-10% IoU of the student's trace against the teacher's, both for the teacher's top-1 class."""
    with torch.no_grad():
        target = teacher(x).argmax(dim=1)
    teacher_traces = ClassActivationMap(teacher).attribute(x, target)
    student_traces = ClassActivationMap(student).attribute(x, target)
    return {"fidelity_cosine": round(float(explain_metrics.cosine_similarity(student_traces, teacher_traces).mean()), 4),
            "fidelity_iou": round(float(explain_metrics.top_k_iou(student_traces, teacher_traces, TOP_FRACTION).mean()), 4)}


def explanation_report(teacher: nn.Module, student: nn.Module, beats: Dataset, fs: float) -> dict:
    x = torch.from_numpy(beats.x)
    return {**fidelity(teacher, student, x), **localization(student, x, fs), "beats": int(len(beats.y))}
