"""WCAM: Weighted Collapsed Attribution Matching (Park et al., NeurIPS 2020), for 1D GAP+linear networks.

The matched map is Grad-CAM at the last conv block for the teacher's top-1 class: channel weights are the
summed gradients of that logit, the map is ReLU of the channel-weighted sum of the feature maps (collapsed
over channels, so teacher and student may differ in width). Each map is L2-normalized; the loss is beta
times the batch mean of the squared L2 distance between the student's and the teacher's maps (the sum
over time rather than the mean keeps beta independent of the layer length). The teacher's map is detached.

Two paths give the same loss and gradients (tests/test_wcam.py proves it):
- exact: Grad-CAM through autograd with create_graph=True (double backward), for any model;
- closed form: for a global-average-pool + linear head the summed gradient of logit c over time is the
  head weight w_c, so the map is the class activation map, an explicit function of features and weights.
"""

from __future__ import annotations

import torch
from torch import nn

from sdk.errors import HeartSightError
from sdk.explain.attribution import has_gap_linear_head, logits_and_cam, logits_and_grad_cam, upsample

PAPER_BETA = 100.0
STOCHASTIC_DROP = 0.3  # share of the teacher's channels dropped when forming its map (stochastic WCAM)


def forward_with_map(model: nn.Module, x: torch.Tensor, target: torch.Tensor, exact: bool,
                     layer: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, map) of one forward pass: the map of class `target` at the last block, differentiable."""
    if not exact:
        if not has_gap_linear_head(model):
            raise HeartSightError(f"{type(model).__name__} has no GAP+linear head; use the exact WCAM path")
        logits, maps, _ = logits_and_cam(model, x, target)
        return logits, maps
    logits, maps, _ = logits_and_grad_cam(model, layer if layer is not None else model.features, x, target,
                                          create_graph=True)
    return logits, maps


def normalized(maps: torch.Tensor) -> torch.Tensor:
    return maps / maps.norm(dim=-1, keepdim=True).clamp(min=1e-8)


class Wcam:
    """The regularizer bound to a frozen teacher: `student_logits, loss = wcam(student, x)`."""

    def __init__(self, teacher: nn.Module, beta: float = PAPER_BETA, exact: bool | None = None,
                 stochastic: bool = False, seed: int = 0):
        if not has_gap_linear_head(teacher):
            raise HeartSightError(f"the WCAM teacher must be a zoo model (GAP+linear head), got {type(teacher).__name__}")
        self.teacher = teacher.eval()
        self.beta = beta
        self.exact = exact
        self.stochastic = stochastic
        self.generator = torch.Generator().manual_seed(seed)

    def teacher_targets_and_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(teacher logits, its top-1 class, its normalized map), all detached."""
        with torch.no_grad():
            mask = None
            if self.stochastic:
                mask = torch.rand((len(x), self.teacher.head.in_features), generator=self.generator) >= STOCHASTIC_DROP
            logits, maps, target = logits_and_cam(self.teacher, x, channel_mask=mask)
            return logits, target, normalized(maps)

    def __call__(self, student: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(student logits, teacher logits, beta * WCAM loss) for one batch."""
        teacher_logits, target, teacher_maps = self.teacher_targets_and_maps(x)
        exact = self.exact if self.exact is not None else not has_gap_linear_head(student)
        logits, student_maps = forward_with_map(student, x, target, exact)
        student_maps = upsample(student_maps, teacher_maps.shape[-1])
        distance = (normalized(student_maps) - teacher_maps).pow(2).sum(dim=-1)
        return logits, teacher_logits, self.beta * distance.mean()
