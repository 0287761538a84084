"""Dynamical isometry around pruning (Wang et al. 2021): a diagnostic and two repairs.

Pruning is an initialization for fine-tuning, and removing weights breaks the isometry of the input-output
Jacobian that made the network trainable; a larger fine-tuning learning rate partly compensates. Here:
- the diagnostic: singular values of the Jacobian of the logits with respect to the input window, per beat
  (mean, spread, and the median per-beat condition number), cheap for a 1D net with four classes;
- a growing L2 penalty on exactly the filters pruning will remove (their weights, batch-norm scale and
  shift), so that removing them no longer changes the function (Wang et al.'s regularisation-based repair);
- QR re-orthogonalisation of the slimmed layers: each weight matrix (rows = output units) is replaced by the
  orthogonal factor of its QR decomposition, signs fixed by R's diagonal. Isometry is exact only for a
  linear chain, so batch norm must not sit between the layers (it rescales every channel afterwards).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.architectures import GapCnn, convolutions
from sdk.errors import HeartSightError

L2_SHRINK = 12.0  # the filters to be removed end at about exp(-12) of their size
L2_RAMP = 0.5  # share of the regularisation steps over which the coefficient grows from 0 to its ceiling


def jacobian_singular_values(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(beats, classes) singular values of d logits / d input, one Jacobian per beat (eval mode: beats independent)."""
    model.eval()
    x = x.clone().requires_grad_(True)
    logits = model(x)
    rows = [torch.autograd.grad(logits[:, c].sum(), x, retain_graph=c < logits.shape[1] - 1)[0].flatten(1)
            for c in range(logits.shape[1])]
    return torch.linalg.svdvals(torch.stack(rows, dim=1)).detach()


def isometry(model: nn.Module, x: torch.Tensor) -> dict:
    """jsv_mean, jsv_std (over all beats' singular values) and jsv_cond (median per-beat largest/smallest)."""
    s = jacobian_singular_values(model, x).double()
    condition = s.max(dim=1).values / s.min(dim=1).values.clamp(min=1e-12)
    return {"jsv_mean": round(float(s.mean()), 5), "jsv_std": round(float(s.std()), 5),
            "jsv_cond": round(float(np.median(condition.numpy())), 3)}


class GrowingL2:
    """A growing L2 penalty on the filters to be removed (conv rows, batch-norm scale and shift), applied after each
    optimizer step as decoupled decay (w <- (1 - lambda) w, the way AdamW applies its L2): Adam normalises a
    penalty's gradient and would move each weight by at most the LR per step, far too slowly to zero a filter.

    lambda grows linearly over the first L2_RAMP of `steps` calls, then holds, its ceiling chosen so that the
    filters end at about exp(-L2_SHRINK) of their size; the rest of the network adapts as they fade.
    """

    def __init__(self, keep: list[torch.Tensor], widths: tuple[int, ...], steps: int):
        self.removed = []
        for kept, width in zip(keep, widths):
            mask = torch.ones(width, dtype=torch.bool)
            mask[kept] = False
            self.removed.append(mask)
        self.ramp = max(1, int(steps * L2_RAMP))
        self.ceiling = min(0.9, L2_SHRINK / (steps * (1 - L2_RAMP / 2)))
        self.step = 0

    @property
    def coefficient(self) -> float:
        return self.ceiling * min(1.0, self.step / self.ramp)

    @torch.no_grad()
    def __call__(self, model: GapCnn) -> None:
        self.step += 1
        norms = [m for m in model.features if isinstance(m, nn.BatchNorm1d)]
        for conv, norm, removed in zip(convolutions(model), norms, self.removed):
            for parameter in (conv.weight, norm.weight, norm.bias):
                parameter[removed] *= 1.0 - self.coefficient


BATCH_NORM_BETWEEN_LAYERS = (
    "QR re-orthogonalisation needs layers with no batch norm between them (batch norm "
    "rescales each channel after the QR, so the layers would not be orthogonal); add "
    "--fold-bn to fold it into the convolutions first, or use --method qat, which folds it")


def check_batch_norm_free(model: nn.Module) -> None:
    if any(isinstance(m, nn.BatchNorm1d) for m in model.modules()):
        raise HeartSightError(BATCH_NORM_BETWEEN_LAYERS)


@torch.no_grad()
def qr_orthogonalize(model: GapCnn) -> GapCnn:
    """Replace every convolution's and the head's weight by the orthogonal factor of its own QR (in place)."""
    check_batch_norm_free(model)
    for layer in [*convolutions(model), model.head]:
        weight = layer.weight.flatten(1)  # (outputs, fan-in)
        wide = weight.shape[0] <= weight.shape[1]
        q, r = torch.linalg.qr(weight.T if wide else weight)
        q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))
        layer.weight.copy_((q.T if wide else q).reshape(layer.weight.shape))
    return model
