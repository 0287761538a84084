"""Pruning of GapCnn models: structured (whole channels removed) and unstructured (global magnitude masks)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from models.architectures import GapCnn, convolutions

UNSTRUCTURED_STEP = 0.2  # each round prunes 20% of the weights still alive


def l1_filter_norms(model: GapCnn) -> list[torch.Tensor]:
    """Per block, the L1 norm of each output filter (Li et al., ICLR 2017)."""
    return [conv.weight.detach().abs().sum(dim=(1, 2)) for conv in convolutions(model)]


def pruned_widths(widths: tuple[int, ...], ratio: float) -> tuple[int, ...]:
    """Block widths after removing `ratio` of each block's channels (at least 2 stay)."""
    return tuple(max(2, int(round(w * (1.0 - ratio)))) for w in widths)


def channels_to_keep(model: GapCnn, widths: tuple[int, ...]) -> list[torch.Tensor]:
    """Per block, the sorted indices of the `widths[i]` filters with the largest L1 norms."""
    return [torch.sort(torch.topk(norms, min(w, len(norms))).indices).values
            for norms, w in zip(l1_filter_norms(model), widths)]


def remove_channels(model: GapCnn, keep: list[torch.Tensor]) -> GapCnn:
    """A smaller dense copy holding only the kept channels of each block (and the head columns they feed);
    batch norm, folded biases and every other layer are kept as they are.

    The zoo's blocks form a chain (no residual connections), so a block's kept outputs are exactly the next
    block's kept inputs.
    """
    smaller = copy.deepcopy(model).eval()
    block, inputs = -1, torch.arange(convolutions(model)[0].in_channels)
    with torch.no_grad():
        for module in smaller.features:
            if isinstance(module, nn.Conv1d):
                block += 1
                module.weight = nn.Parameter(module.weight[keep[block]][:, inputs].clone())
                if module.bias is not None:
                    module.bias = nn.Parameter(module.bias[keep[block]].clone())
                module.out_channels, module.in_channels = len(keep[block]), len(inputs)
            elif isinstance(module, nn.BatchNorm1d):
                for name in ("weight", "bias"):
                    setattr(module, name, nn.Parameter(getattr(module, name)[keep[block]].clone()))
                for name in ("running_mean", "running_var"):
                    setattr(module, name, getattr(module, name)[keep[block]].clone())
                module.num_features = len(keep[block])
            elif isinstance(module, nn.ReLU):
                inputs = keep[block]
        smaller.head.weight = nn.Parameter(model.head.weight[:, keep[-1]].clone())
        smaller.head.in_features = len(keep[-1])
    smaller.widths = tuple(len(k) for k in keep)
    return smaller


def prunable_weights(model: nn.Module) -> list[nn.Parameter]:
    """Convolution and linear weights (not biases or batch-norm parameters)."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Linear))]


def sparsity_schedule(target: float, step: float = UNSTRUCTURED_STEP) -> list[float]:
    """Overall sparsity after each round: 20% of the remaining weights per round, the last round capped at target."""
    levels, sparsity = [], 0.0
    while sparsity < target - 1e-9:
        sparsity = min(target, 1.0 - (1.0 - sparsity) * (1.0 - step))
        levels.append(sparsity)
    return levels


def global_magnitude_masks(model: nn.Module, sparsity: float) -> list[torch.Tensor]:
    """Masks that zero the `sparsity` share of smallest-magnitude weights, one threshold across all layers."""
    weights = prunable_weights(model)
    magnitudes = torch.cat([w.detach().abs().flatten() for w in weights])
    count = int(round(sparsity * magnitudes.numel()))
    if count == 0:
        return [torch.ones_like(w) for w in weights]
    threshold = torch.kthvalue(magnitudes, count).values
    return [(w.detach().abs() > threshold).float() for w in weights]


def apply_masks(model: nn.Module, masks: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for weight, mask in zip(prunable_weights(model), masks):
            weight.mul_(mask)


def sparsity(model: nn.Module) -> float:
    weights = prunable_weights(model)
    return float(sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights))
