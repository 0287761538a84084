"""The seven compression methods behind one function, each plain or with WCAM.

Every method starts from a trained zoo model (the teacher, the "uncompressed former self"), trains on the
teacher's own training beats (DS1 minus the checkpoint-selection patients), chooses its checkpoint on
those held-out DS1 patients, and returns a real, smaller, reloadable model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.architectures import GapCnn, fold_batch_norm, predict
from models.quantization import calibrate, prepare_qat
from models.registry import ModelSpec
from sdk.compress import isometry, pruning, structured
from sdk.compress.report import explanation_sample
from sdk.compress.wcam import Wcam
from sdk.data.datasets import Dataset
from sdk.errors import HeartSightError
from sdk.training.recipes import beat_config, beat_score
from sdk.training.train import TaskLoss, class_weights, epoch_class_counts, fit

METHODS = ("structured", "unstructured", "distill", "qat", "unify", "mpd", "kernel-codebook")
# int8 models whose convolutions take a structured form (sdk.compress.structured) after pruning to the plan's widths
STRUCTURED = ("unify", "mpd", "kernel-codebook")
INTEGER = ("qat", *STRUCTURED)  # trained with the firmware's roundings
SCHEDULES = ("one-shot", "iterative")
REPAIRS = ("none", "growing-l2", "qr-orthogonal")
REPAIRABLE = ("structured", "qat")  # the methods that remove whole filters from inherited weights
L2_EPOCHS = 2  # growing-L2 regularisation before the removal
JSV_BEATS_PER_CLASS = 16  # held-out DS1 beats per class for the Jacobian diagnostic
KD_TEMPERATURE, KD_ALPHA = 4.0, 0.9
KD_CLASS_WEIGHT_POWER = 1.0  # distillation weights 1/frequency: each class counts as much as N
ITERATIVE_ROUNDS = 3
EPOCHS = {"structured": 4, "unstructured": 1, "distill": 8, "qat": 4,  # unstructured: per 20% round
          "unify": 4, "mpd": 10, "kernel-codebook": 6}  # unify: after ADMM_ROUNDS epochs of ADMM; kernel-codebook:
# after one epoch per layer but the last, each following that layer's codebook
LEARNING_RATES = {"structured": 1e-3, "unstructured": 1e-3, "distill": 3e-3, "qat": 5e-4,
                  "unify": 2e-3, "mpd": 3e-3, "kernel-codebook": 4e-3}
ADMM_ROUNDS = 3  # one epoch each


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
    repair: str = "none"  # dynamical-isometry repair of the pruning: none, growing-l2 or qr-orthogonal
    lr: float | None = None  # fine-tuning peak learning rate (default: the method's)
    fold_bn: bool = False  # structured: fold batch norm into the convolutions after removal (a BN-free network)
    kd: bool = False  # add class-balanced distillation from the teacher (always on for distill)
    block: str = "channels:4"  # unify: blocks sharing one magnitude, channels:N at one tap or taps:N of one kernel
    block_ratio: float = 0.5  # unify: share of each layer's blocks pruned (zero magnitude)
    groups: int = 4  # mpd: diagonal blocks per layer (each keeps 1/groups of the weights)
    bits: int = 4  # kernel-codebook: index bits per kernel (2**bits codewords per layer)

    def check(self) -> None:
        if self.method not in METHODS:
            raise HeartSightError(f"unknown compression method {self.method!r}; choose one of {', '.join(METHODS)}")
        lowest = 0.0 if self.method in INTEGER else 1e-9
        if not lowest <= self.ratio < 1.0:
            raise HeartSightError(f"--ratio must lie in (0, 1) ({', '.join(INTEGER)} also accept 0: no channel "
                                  f"pruning), got {self.ratio}")
        if self.schedule not in SCHEDULES:
            raise HeartSightError(f"unknown schedule {self.schedule!r}; choose one-shot or iterative")
        if self.wcam_beta < 0:
            raise HeartSightError(f"--wcam BETA must be >= 0, got {self.wcam_beta}")
        if self.repair not in REPAIRS:
            raise HeartSightError(f"unknown repair {self.repair!r}; choose one of {', '.join(REPAIRS)}")
        if self.repair != "none" and self.method not in REPAIRABLE:
            raise HeartSightError(f"--repair {self.repair} applies to pruning that removes filters (structured or qat); "
                                  f"{self.method} removes none")
        if self.repair == "growing-l2" and self.schedule != "one-shot":
            raise HeartSightError("--repair growing-l2 regularises toward one removal; use --schedule one-shot")
        if self.repair == "qr-orthogonal" and self.method == "structured" and not self.fold_bn:
            raise HeartSightError(isometry.BATCH_NORM_BETWEEN_LAYERS)
        if self.fold_bn and self.method != "structured":
            raise HeartSightError(f"--fold-bn applies to structured pruning ({self.method} "
                                  + ("always folds batch norm)" if self.method == "qat" else "keeps its batch norm)"))
        if self.lr is not None and not 0 < self.lr < 1:
            raise HeartSightError(f"--lr must lie in (0, 1), got {self.lr}")
        if self.method == "unify":
            structured.parse_block(self.block)
            if not 0 <= self.block_ratio < 1:
                raise HeartSightError(f"--block-ratio must lie in [0, 1), got {self.block_ratio}")
        if self.method == "mpd" and self.groups < 2:
            raise HeartSightError(f"--groups must be at least 2 (1 is a dense layer), got {self.groups}")
        if self.method == "kernel-codebook" and not 1 <= self.bits <= 8:
            raise HeartSightError(f"--bits must lie in 1..8 (an index per kernel, packed), got {self.bits}")

    def widths(self, spec: ModelSpec) -> tuple[int, ...]:
        """The compressed model's block widths."""
        return spec.widths if self.method == "unstructured" else pruning.pruned_widths(spec.widths, self.ratio)

    def check_fits(self, spec: ModelSpec) -> None:
        """Refuse options the method cannot honour on this teacher's layers, before any data is read."""
        self.check()
        if self.method in STRUCTURED:
            shapes = structured.layer_shapes(len(spec.input_channels), self.widths(spec), spec.kernel_size)
            structured.check_fits(self.method, shapes, self.block, self.groups, self.bits)


def config_lr(plan: Plan) -> float:
    """The fine-tuning peak learning rate: the plan's, or its method's default."""
    return plan.lr or LEARNING_RATES[plan.method]


def objective_for(teacher: GapCnn, wcam: Wcam | None, distill_weights: torch.Tensor | None):
    """The batch loss: task loss, plus (with distill_weights, one per class) alpha-weighted class-balanced
    distillation, plus beta * WCAM."""
    distill = distill_weights is not None

    def objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task_loss: TaskLoss) -> torch.Tensor:
        if wcam is not None:
            logits, teacher_logits, attribution_loss = wcam(model, x)
        else:
            logits, attribution_loss = model(x), torch.zeros(())
            with torch.no_grad():
                teacher_logits = teacher(x) if distill else None
        loss = task_loss(logits, y)
        if distill:
            loss = (1 - KD_ALPHA) * loss + KD_ALPHA * balanced_distillation(logits, teacher_logits, y, distill_weights)
        return loss + attribution_loss

    return objective


def balanced_distillation(logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor,
                          class_weights: torch.Tensor) -> torch.Tensor:
    """Hinton's KD term, each beat weighted by its class's weight, so the rare classes the teacher knows are not
    averaged away by the common one."""
    per_beat = F.kl_div(F.log_softmax(logits / KD_TEMPERATURE, dim=1), F.softmax(teacher_logits / KD_TEMPERATURE, dim=1),
                        reduction="none").sum(dim=1) * KD_TEMPERATURE ** 2
    weights = class_weights[y]
    return (per_beat * weights).sum() / weights.sum()


def run(plan: Plan, spec: ModelSpec, teacher: GapCnn, train: Dataset, validation: Dataset,
        progress: bool = True) -> tuple[nn.Module, ModelSpec, list[dict], dict]:
    """Compress `teacher`; returns (model, its spec, training history, isometry diagnostics).

    The diagnostics (sdk.compress.isometry) are measured on held-out DS1 beats for pruning methods: before
    pruning, right after the removal (and repair), and after fine-tuning.
    """
    plan.check_fits(spec)
    teacher = copy.deepcopy(teacher).eval()
    wcam = Wcam(teacher, plan.wcam_beta, exact=plan.exact_wcam, stochastic=plan.stochastic, seed=plan.seed) \
        if plan.wcam_beta > 0 else None
    epochs = plan.epochs or EPOCHS[plan.method]
    config = beat_config(epochs, plan.seed, config_lr(plan))
    score = beat_score(spec)
    counts = epoch_class_counts(train.y, len(spec.outputs), config.max_per_class)
    distill_weights = None
    if plan.method == "distill" or plan.kd:  # every class weighs the same in the distillation term
        distill_weights = class_weights(counts, KD_CLASS_WEIGHT_POWER)
    probe = torch.from_numpy(explanation_sample(validation, JSV_BEATS_PER_CLASS).x)
    diagnostics: dict = {}

    def measured(model: nn.Module) -> dict:
        """The isometry diagnostic and the accuracy on the held-out DS1 patients."""
        accuracy = float(np.mean(predict(model, validation.x).argmax(1) == validation.y))
        return {**isometry.isometry(model, probe), "accuracy": round(accuracy, 4)}

    def tune(model: nn.Module, model_spec: ModelSpec, config=config, after_step=None) -> tuple[nn.Module, list[dict]]:
        return fit(model_spec, train, config, validation, score, progress, model=model,
                   objective=objective_for(teacher, wcam, distill_weights), after_step=after_step)

    def removed(model: GapCnn, widths: tuple[int, ...]) -> GapCnn:
        """The plan's removal of all but `widths` channels, with its repair; the diagnostic before and after."""
        if "before" not in diagnostics:
            diagnostics["before"] = measured(model)
        keep = pruning.channels_to_keep(model, widths)
        if plan.repair == "growing-l2":
            steps = L2_EPOCHS * int(counts.sum()) // config.batch_size
            penalty = isometry.GrowingL2(keep, model.widths, steps)
            model, part = fit(spec, train, replace(config, epochs=L2_EPOCHS), progress=progress, model=copy.deepcopy(model),
                              objective=objective_for(teacher, wcam, distill_weights), after_step=penalty)
            history.extend({**h, "phase": "growing-l2"} for h in part)
            diagnostics["regularised"] = measured(model)
        model = pruning.remove_channels(model, keep)
        if plan.fold_bn or plan.method in INTEGER:
            model = fold_batch_norm(model)
        if plan.repair == "qr-orthogonal":
            model = isometry.qr_orthogonalize(model)
        diagnostics["after_removal"] = measured(model)
        return model

    def unscored_epoch(model: nn.Module, model_spec: ModelSpec, seed_offset: int, objective) -> tuple[nn.Module, dict]:
        """One epoch of `objective` whose last weights are kept (no checkpoint choice): a step inside a method."""
        model, part = fit(model_spec, train, replace(config, epochs=1, seed=config.seed + seed_offset), None, None,
                          progress, model=model, objective=objective)
        return model, part[0]

    def calibration_batches():
        return (torch.from_numpy(train.x[i: i + 512]) for i in range(0, min(len(train.x), 8192), 512))

    history: list[dict] = []
    if plan.method == "structured":
        model = teacher
        rounds = ITERATIVE_ROUNDS if plan.schedule == "iterative" else 1
        for r in range(1, rounds + 1):  # each round removes the same share of the channels still there
            widths = pruning.pruned_widths(teacher.widths, 1.0 - (1.0 - plan.ratio) ** (r / rounds))
            model = removed(model, widths)
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
    else:  # qat, and the structured int8 forms on top of it
        model = prepare_qat(removed(teacher, pruning.pruned_widths(teacher.widths, plan.ratio)))
        calibrate(model, calibration_batches())
        model_spec = replace(spec, widths=model.widths)
        if plan.method == "unify":
            axis, size = structured.parse_block(plan.block)
            admm = structured.Admm(model, axis, size, plan.block_ratio)
            base = objective_for(teacher, wcam, distill_weights)
            for round_ in range(ADMM_ROUNDS):  # W-step: one epoch of the proximal objective (the last W, unscored)
                rho = admm.rho
                model, record = unscored_epoch(model, model_spec, round_,
                                               lambda m, x, y, loss: base(m, x, y, loss) + admm.penalty())
                history.append({**record, "phase": "admm", "rho": rho, "distance_to_structure": round(admm.update(), 5)})
            model = structured.unify(model, axis, size, plan.block_ratio)
        elif plan.method == "mpd":
            model = structured.group_masks(model, plan.groups, plan.seed)
        elif plan.method == "kernel-codebook":
            # one layer at a time, the rest adapting for an epoch after each: all at once, the k-means error (0.5-0.7
            # of each layer's norm at 4 bits) leaves a network that fine-tuning recovers unevenly across seeds
            layers = len(model.widths)
            for layer in range(layers - 1):
                model = structured.kernel_codebooks(model, plan.bits, plan.seed, [layer])
                calibrate(model, calibration_batches())
                model, record = unscored_epoch(model, model_spec, layer, objective_for(teacher, wcam, distill_weights))
                history.append({**record, "phase": f"codebook layer {layer}"})
            model = structured.kernel_codebooks(model, plan.bits, plan.seed, [layers - 1])
        if plan.method in STRUCTURED:  # the structure changed the activations: their ranges start afresh
            calibrate(model, calibration_batches())
        model, part = tune(model, model_spec)
        history += part
    model.eval()
    if diagnostics:
        diagnostics["final"] = measured(model)
    return model, replace(spec, widths=tuple(model.widths)), history, diagnostics
