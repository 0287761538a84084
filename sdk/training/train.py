"""Seeded, deterministic training of a zoo model, with the checkpoint chosen on held-out groups (never the test set)."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models.architectures import predict
from models.registry import ModelSpec
from sdk.data.datasets import Dataset
from sdk.data.preprocess import HR_GRID_BPM
from sdk.explain.attribution import logits_and_cam, upsample

HR_TARGET_SIGMA_BPM = 3.0  # a heart-rate model's target: the reference rate, blurred by this much over HR_GRID_BPM


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int = 256
    max_lr: float = 3e-3
    weight_decay: float = 1e-2
    seed: int = 0
    max_per_class: int | None = None  # cap each class's examples per epoch (a fresh random draw every epoch)
    class_weight_power: float = 0.5  # class weights proportional to 1 / frequency**power
    # with offsets: the square of the network's own margin (last output minus first) is penalised with this weight,
    # so that it moves the decision only where the evidence in the offsets is consistently wrong
    own_margin_penalty: float = 0.0


def make_deterministic(seed: int) -> None:
    """Same seed, same machine -> same weights (CPU kernels run deterministically on a fixed thread count)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)


BASELINE_WANDER = (0.05, 0.5, 0.15)  # Hz low, Hz high, peak amplitude (in the window's ECG units) left by a band-pass


def augment(spec: ModelSpec, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Amplitude, baseline, noise and rhythm-estimate jitter the way other patients and devices differ; marker
    channels are left alone. An ECG's template difference takes the ECG's gain (it is a difference of the
    same signal; wander and noise cancel in it to first order)."""
    n, _, length = x.shape
    x = x.clone()
    for c, name in enumerate(spec.input_channels):
        if name in ("ecg", "ppg", "accel_x", "accel_y", "accel_z"):
            gain = torch.empty(n, 1).uniform_(0.8, 1.25, generator=generator)
            noise = torch.empty(n, 1).uniform_(0.0, 0.08, generator=generator)
            x[:, c] = x[:, c] * gain + noise * torch.randn(x[:, c].shape, generator=generator)
            if name == "ecg":
                x[:, c] += _baseline_wander(n, length, spec.fs, generator)
                if "template_delta" in spec.input_channels:
                    x[:, spec.input_channels.index("template_delta")] *= gain
        elif name == "rhythm":
            x[:, c] = x[:, c] * torch.empty(n, 1).uniform_(0.85, 1.15, generator=generator)
    return x


def _baseline_wander(n: int, length: int, fs: float, generator: torch.Generator) -> torch.Tensor:
    """A slow sinusoid of random frequency, phase and amplitude per example: respiration and electrode motion."""
    low, high, peak = BASELINE_WANDER
    frequency = torch.empty(n, 1).uniform_(low, high, generator=generator)
    phase = torch.empty(n, 1).uniform_(0, 2 * np.pi, generator=generator)
    amplitude = torch.empty(n, 1).uniform_(0, peak, generator=generator)
    t = torch.arange(length) / fs
    return amplitude * torch.sin(2 * np.pi * frequency * t + phase)


def epoch_indices(y: np.ndarray, max_per_class: int | None, rng: np.random.Generator) -> np.ndarray:
    """Shuffled example indices for one epoch, drawing at most max_per_class examples of each class."""
    if max_per_class is None or y.dtype.kind == "f":
        return rng.permutation(len(y))
    chosen = []
    for k in np.unique(y):
        members = np.flatnonzero(y == k)
        chosen.append(rng.choice(members, max_per_class, replace=False) if len(members) > max_per_class else members)
    return rng.permutation(np.concatenate(chosen))


def epoch_class_counts(y: np.ndarray, n_classes: int, max_per_class: int | None) -> np.ndarray:
    """Examples of each class in one epoch (epoch_indices draws at most max_per_class of each)."""
    return np.minimum(np.bincount(y, minlength=n_classes), max_per_class or len(y))


def class_weights(counts: np.ndarray, power: float = 0.5) -> torch.Tensor:
    """Weights proportional to 1/frequency**power: rare classes count more without drowning the common one."""
    counts = np.asarray(counts, dtype=np.float64)
    weights = 1.0 / np.maximum(counts, 1.0) ** power
    return torch.tensor(weights / (weights * counts).sum() * counts.sum(), dtype=torch.float32)


TaskLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, TaskLoss], torch.Tensor]


def task_loss_for(spec: ModelSpec, train: Dataset, config: TrainConfig) -> TaskLoss:
    """Class-weighted cross-entropy for classifiers; for heart rate, cross-entropy of the rate scores (softmax over
    HR_GRID_BPM) against the reference rate blurred by HR_TARGET_SIGMA_BPM."""
    if spec.is_classifier:
        counts = epoch_class_counts(train.y, len(spec.outputs), config.max_per_class)
        return nn.CrossEntropyLoss(weight=class_weights(counts, config.class_weight_power))
    grid = torch.from_numpy(HR_GRID_BPM.astype(np.float32))

    def heart_rate_loss(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = torch.softmax(-0.5 * ((grid[None] - y[:, None]) / HR_TARGET_SIGMA_BPM) ** 2, dim=1)
        return -(target * torch.log_softmax(scores, dim=1)).sum(dim=1).mean()
    return heart_rate_loss


def plain_objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task_loss: TaskLoss) -> torch.Tensor:
    return task_loss(model(x), y)


def heart_rate_objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task_loss: TaskLoss) -> torch.Tensor:
    """A heart-rate model learns its explanation: the class activation map over the spectra (models.heart_rate)
    scores the rates. Trained without the ReLU the device map has, so every rate learns; the rates the device
    reads (the highest) are positive either way."""
    _, maps, _ = logits_and_cam(model, x, 0, relu=False)
    return task_loss(upsample(maps, x.shape[-1]), y)


def task_objective(spec: ModelSpec) -> Objective:
    return plain_objective if spec.is_classifier else heart_rate_objective


def _offset(task_loss: TaskLoss, offset: torch.Tensor, own_margin_penalty: float) -> TaskLoss:
    def loss(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return task_loss(output + offset, y) + own_margin_penalty * (output[:, -1] - output[:, 0]).pow(2).mean()
    return loss


def fit(spec: ModelSpec, train: Dataset, config: TrainConfig, validation: Dataset | None = None,
        score: Callable[[np.ndarray, np.ndarray], float] | None = None, progress: bool = True,
        model: nn.Module | None = None, objective: Objective | None = None,
        after_step: Callable[[nn.Module], None] | None = None, offsets: np.ndarray | None = None):
    """Train a fresh model (or fine-tune `model`); return it at the epoch with the best validation score.

    offsets (n, outputs), if given, are added to the model's outputs in the task loss: evidence from outside the
    window (a rhythm model's RR evidence) that the model learns to complement, as it will be added at inference.

    Without validation the last epoch's model is returned. Compression plugs in through `objective` (the
    loss of one batch: task loss plus distillation and WCAM terms) and `after_step` (e.g. re-applying
    pruning masks). Returns (model, history), one dict per epoch: loss, validation score, seconds.
    """
    make_deterministic(config.seed)
    task_loss = task_loss_for(spec, train, config)
    objective = objective or task_objective(spec)
    model = spec.build() if model is None else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.max_lr, weight_decay=config.weight_decay)
    order_rng = np.random.default_rng(config.seed)
    epoch_size = len(epoch_indices(train.y, config.max_per_class, np.random.default_rng(0)))
    steps_per_epoch = int(np.ceil(epoch_size / config.batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.max_lr, total_steps=config.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    history, best_state, best_score = [], None, -np.inf
    epochs = tqdm(range(config.epochs), desc=f"train {spec.name}", unit="epoch", disable=not progress)
    for epoch in epochs:
        started = time.perf_counter()
        model.train()
        total = 0.0
        for batch in np.array_split(epoch_indices(train.y, config.max_per_class, order_rng), steps_per_epoch):
            batch = np.sort(batch)
            x = augment(spec, torch.from_numpy(train.x[batch]), generator)
            y = torch.from_numpy(train.y[batch])
            batch_loss = task_loss if offsets is None else _offset(task_loss, torch.from_numpy(offsets[batch]),
                                                                  config.own_margin_penalty)
            loss = objective(model, x, y, batch_loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            if after_step is not None:
                after_step(model)
            total += loss.item() * len(batch)
        record = {"epoch": epoch + 1, "loss": round(total / epoch_size, 5)}
        if validation is not None and score is not None:
            record["validation"] = round(float(score(validation.y, predict(model, validation.x))), 4)
            if record["validation"] > best_score:
                best_score, best_state = record["validation"], copy.deepcopy(model.state_dict())
        record["seconds"] = round(time.perf_counter() - started, 1)
        history.append(record)
        epochs.set_postfix({k: v for k, v in record.items() if k != "epoch"})
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, history
