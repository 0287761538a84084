"""An RR-only atrial fibrillation detector: logistic regression on RR-irregularity features.

The classical baseline every AF model is compared with (sdk.data.rr_features computes its inputs). It reads beat
times only, so it can learn from databases that hold no signal (the MIT-BIH AF Database's beat lists) and it does
not care which device recorded the ECG.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sdk.data import preprocess, rr_features
from sdk.errors import HeartSightError

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


@dataclass(frozen=True)
class RhythmEvidence:
    """An RR model's evidence for AF in closed form: AF logit minus non-AF logit, linear in the standardised
    features. A rhythm model adds it to its AF logit, so what the RR model learned from the AF Database (which holds
    no signal for the CNN to learn from) decides together with the CNN's morphology. It travels in the model card,
    a few numbers a firmware engineer can read, so every backend and the device apply the same evidence."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    # the beat model whose V and F beats' intervals are left out (ectopic_beats), or None to read every interval
    beat_model: str | None = None

    @classmethod
    def of(cls, model: RrLogistic, beat_model: str | None = None) -> "RhythmEvidence":
        weight, bias = model.linear.weight.detach().double().numpy(), model.linear.bias.detach().double().numpy()
        return cls(model.mean.double().numpy(), model.std.double().numpy(), weight[1] - weight[0],
                   float(bias[1] - bias[0]), beat_model)

    @classmethod
    def from_card(cls, entry: dict) -> "RhythmEvidence":
        computed = {"features": list(rr_features.FEATURES), "context_beats": rr_features.CONTEXT_BEATS,
                    "context_span": rr_features.CONTEXT_SPAN, "min_intervals": rr_features.MIN_INTERVALS}
        recorded = {key: entry.get(key) for key in computed}
        if recorded != computed:
            raise HeartSightError(f"the card's rhythm evidence was fitted on {recorded}, this HeartSight computes "
                                  f"{computed}; train the model again with this version")
        return cls(*(np.asarray(entry[k], np.float64) for k in ("mean", "scale", "weights")), float(entry["bias"]),
                   (entry.get("ectopic_beats") or {}).get("model"))

    def to_card(self) -> dict:
        return {"features": list(rr_features.FEATURES), "context_beats": rr_features.CONTEXT_BEATS,
                "context_span": rr_features.CONTEXT_SPAN, "min_intervals": rr_features.MIN_INTERVALS,
                "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "weights": self.weights.tolist(), "bias": self.bias,
                **({"ectopic_beats": {"model": self.beat_model, "classes": list(ECTOPIC_CLASSES)}}
                   if self.beat_model else {})}

    def __call__(self, features: np.ndarray, usable: np.ndarray | None = None) -> np.ndarray:
        """(n,) evidence for windows' features; 0 (no say) where a window has too few intervals to judge (not
        usable; by default, where its features are NaN)."""
        features = np.asarray(features, np.float64)
        usable = np.isfinite(features).all(axis=1) if usable is None else np.asarray(usable, bool)
        evidence = ((np.nan_to_num(features) - self.mean) / self.scale) @ self.weights + self.bias
        return np.where(usable, evidence, 0.0).astype(np.float32)

    def of_windows(self, beat_times_s: np.ndarray, window_ends_s: np.ndarray,
                   ectopic: np.ndarray | None = None) -> np.ndarray:
        """(n,) evidence for windows ending at window_ends_s, from the beats up to each end (without the intervals
        at the beats flagged ectopic)."""
        return self(*rr_features.window_features(beat_times_s, window_ends_s, ectopic))


ECTOPIC_CLASSES = ("V", "F")  # beats whose intervals say nothing of the atria: ventricular and fusion beats


def ectopic_beats(classify, tracks: preprocess.EcgTracks, beat_spec, indices: np.ndarray | None = None) -> np.ndarray:
    """Whether each beat (of tracks.context, or those at `indices`) is one the beat model (classify: its runner or
    any function from beat windows to outputs; beat_spec: its ModelSpec) calls V or F. Premature ventricular beats
    make a steady rhythm irregular; the RR evidence leaves their intervals out."""
    indices = np.arange(len(tracks.context.r_peaks)) if indices is None else np.asarray(indices, np.int64)
    if not len(indices):
        return np.zeros(0, bool)
    classes = np.asarray(classify(preprocess.beat_windows(tracks, indices, beat_spec.window))).argmax(1)
    return np.isin(classes, [beat_spec.outputs.index(c) for c in ECTOPIC_CLASSES])


def evidence_of_card(card: dict) -> RhythmEvidence | None:
    """The RR evidence a model card gives its AF logit, if any (a fold's: models.registry.fold_card)."""
    entry = card.get("rhythm_evidence")
    return RhythmEvidence.from_card(entry) if entry else None


def offsets(evidence: RhythmEvidence, features: np.ndarray) -> np.ndarray:
    """(n, 2) logit offsets for (non-AF, AF): the evidence for windows' RR features (NaN rows: none)."""
    return with_evidence(np.zeros((len(features), 2), np.float32), evidence(features))


def with_evidence(logits: np.ndarray, evidence: np.ndarray) -> np.ndarray:
    """(non-AF, AF) logits with the rhythm evidence added to AF."""
    fused = np.array(logits, np.float32, copy=True)
    fused[:, 1] += evidence
    return fused
