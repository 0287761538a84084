"""The four compression methods behind one function, each plain or with WCAM.

Every method starts from a trained zoo model (the teacher, the "uncompressed former self"), trains on the
teacher's own training beats (DS1 minus the checkpoint-selection patients), chooses its checkpoint on
those held-out DS1 patients, and returns a real, smaller, reloadable model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from models.architectures import GapCnn, fold_batch_norm
from models.quantization import calibrate, prepare_qat
from models.registry import ModelSpec
from sdk.compress import pruning
from sdk.compress.wcam import Wcam
from sdk.data.datasets import Dataset
from sdk.errors import HeartSightError
from sdk.training.recipes import beat_config, beat_score
from sdk.training.train import TaskLoss, fit

METHODS = ("structured", "unstructured", "distill", "qat")
SCHEDULES = ("one-shot", "iterative")
KD_TEMPERATURE, KD_ALPHA = 4.0, 0.9
ITERATIVE_ROUNDS = 3
EPOCHS = {"structured": 4, "unstructured": 1, "distill": 8, "qat": 4}  # unstructured: per 20% round
LEARNING_RATES = {"structured": 1e-3, "unstructured": 1e-3, "distill": 3e-3, "qat": 5e-4}


@dataclass(frozen=True)
class Plan:
    method: str
    ratio: float  # share of channels removed (structured, qat, distill's width) or of weights zeroed (unstructured)
    wcam_beta: float = 0.0  # 0 = plain
    schedule: str = "one-shot"
    stochastic: bool = False
    exact_wcam: bool = False
    epochs: int | None = None
    seed: int = 0

    def check(self) -> None:
        if self.method not in METHODS:
            raise HeartSightError(f"unknown compression method {self.method!r}; choose one of {', '.join(METHODS)}")
        lowest = 0.0 if self.method == "qat" else 1e-9
        if not lowest <= self.ratio < 1.0:
            raise HeartSightError(f"--ratio must lie in (0, 1) (qat also accepts 0: no pruning), got {self.ratio}")
        if self.schedule not in SCHEDULES:
            raise HeartSightError(f"unknown schedule {self.schedule!r}; choose one-shot or iterative")
        if self.wcam_beta < 0:
            raise HeartSightError(f"--wcam BETA must be >= 0, got {self.wcam_beta}")


def objective_for(teacher: GapCnn, wcam: Wcam | None, distill: bool):
    """The batch loss: task loss, plus (1 - alpha)/alpha-weighted distillation, plus beta * WCAM."""

    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task_loss: TaskLoss) -> torch.Tensor:
        if wcam is not None:
            logits, teacher_logits, attribution_loss = wcam(model, x)
        else:
            logits, attribution_loss = model(x), torch.zeros(())
            with torch.no_grad():
                teacher_logits = teacher(x) if distill else None
        loss = task_loss(logits, y)
        if distill:
            soft = F.kl_div(F.log_softmax(logits / KD_TEMPERATURE, dim=1), F.softmax(teacher_logits / KD_TEMPERATURE, dim=1),
                            reduction="batchmean") * KD_TEMPERATURE ** 2
            loss = (1 - KD_ALPHA) * loss + KD_ALPHA * soft
        return loss + attribution_loss

    return objective


def run(plan: Plan, spec: ModelSpec, teacher: GapCnn, train: Dataset, validation: Dataset,
        progress: bool = True) -> tuple[nn.Module, ModelSpec, list[dict]]:
    """Compress `teacher`; returns (model, its spec, training history)."""
    plan.check()
    teacher = copy.deepcopy(teacher).eval()
    wcam = Wcam(teacher, plan.wcam_beta, exact=plan.exact_wcam, stochastic=plan.stochastic, seed=plan.seed) \
        if plan.wcam_beta > 0 else None
    epochs = plan.epochs or EPOCHS[plan.method]
    config = beat_config(epochs, plan.seed, LEARNING_RATES[plan.method])
    score = beat_score(spec)

    def tune(model: nn.Module, model_spec: ModelSpec, config=config, after_step=None) -> tuple[nn.Module, list[dict]]:
        return fit(model_spec, train, config, validation, score, progress, model=model,
                   objective=objective_for(teacher, wcam, plan.method == "distill"), after_step=after_step)

    history: list[dict] = []
    if plan.method == "structured":
        model = teacher
        rounds = ITERATIVE_ROUNDS if plan.schedule == "iterative" else 1
        for r in range(1, rounds + 1):  # each round removes the same share of the channels still there
            widths = pruning.pruned_widths(teacher.widths, 1.0 - (1.0 - plan.ratio) ** (r / rounds))
            model = pruning.remove_channels(model, pruning.channels_to_keep(model, widths))
            model, part = tune(model, replace(spec, widths=widths), replace(config, epochs=max(1, epochs // rounds)))
            history += part
    elif plan.method == "unstructured":
        model = copy.deepcopy(teacher)
        for level in pruning.sparsity_schedule(plan.ratio):
            masks = pruning.global_magnitude_masks(model, level)
            pruning.apply_masks(model, masks)
            model, part = tune(model, spec, after_step=lambda m, masks=masks: pruning.apply_masks(m, masks))
            history += [{**h, "sparsity": round(level, 3)} for h in part]
    elif plan.method == "distill":
        student_spec = replace(spec, widths=pruning.pruned_widths(spec.widths, plan.ratio))
        torch.manual_seed(plan.seed)
        model, history = tune(student_spec.build(), student_spec)
    else:  # qat
        widths = pruning.pruned_widths(teacher.widths, plan.ratio)
        model = pruning.remove_channels(teacher, pruning.channels_to_keep(teacher, widths))
        model = prepare_qat(fold_batch_norm(model))
        calibrate(model, (torch.from_numpy(train.x[i: i + 512]) for i in range(0, min(len(train.x), 8192), 512)))
        model, history = tune(model, replace(spec, widths=model.widths))
    model.eval()
    return model, replace(spec, widths=tuple(model.widths)), history
