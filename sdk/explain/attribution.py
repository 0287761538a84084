"""Attribution methods with one contract: `attribute(x, target) -> trace`.

`x` is one (N, C, L) tensor; the trace is (N, L), one value per input sample, for the requested output
(`target`: an int, one int per example, or None for each example's top-1 class; regression models have a
single output, 0). Layer maps are upsampled to L by linear interpolation.

The class activation map of a global-average-pool + linear model is *the* HeartSight explanation: the
device computes it in integers, WCAM preserves it during compression, and it equals Grad-CAM at the last
block when Grad-CAM's channel weights are the summed (not averaged) gradients, as WCAM defines them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from sdk.errors import HeartSightError


def _check_input(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise HeartSightError(
            f"attribution input must be one (N, C, L) tensor, got {type(x).__name__} "
            f"with shape {tuple(getattr(x, 'shape', ()))}"
        )


def resolve_targets(logits: torch.Tensor, target: int | torch.Tensor | None) -> torch.Tensor:
    """One output index per example: the given one(s), or the top-1 class."""
    n, outputs = logits.shape
    if target is None:
        return logits.argmax(dim=1)
    index = torch.as_tensor(target, dtype=torch.long)
    if index.ndim == 0:
        index = index.expand(n)
    if index.shape != (n,) or index.min() < 0 or index.max() >= outputs:
        raise HeartSightError(f"target must be an output index in [0, {outputs - 1}] (one per example), got {target}")
    return index


def upsample(maps: torch.Tensor, length: int) -> torch.Tensor:
    """(N, T) layer-resolution maps -> (N, length), linear interpolation."""
    if maps.shape[-1] == length:
        return maps
    return F.interpolate(maps[:, None], size=length, mode="linear", align_corners=False)[:, 0]


def weighted_channel_sum(channel_weights: torch.Tensor, activations: torch.Tensor, relu: bool = True) -> torch.Tensor:
    """The map shared by CAM, Grad-CAM, WCAM and the device: sum_k w_k * A_k(t), ReLU'd; (N, K), (N, K, T) -> (N, T).

    Collapsing the channels is what lets a teacher and a narrower student be compared map to map.
    """
    maps = torch.einsum("nk,nkt->nt", channel_weights, activations)
    return maps.clamp(min=0) if relu else maps


def has_gap_linear_head(model: nn.Module) -> bool:
    return isinstance(getattr(model, "head", None), nn.Linear) and isinstance(getattr(model, "features", None), nn.Module)


def logits_and_cam(model: nn.Module, x: torch.Tensor, target: int | torch.Tensor | None = None, relu: bool = True,
                   channel_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, class activation map at the last block's resolution, target) of one forward pass of a GAP + linear
    model: the head weights of the target applied to the last block's maps. The one closed form of the CAM, used by
    the explainer and by WCAM (differentiable unless called under no_grad); channel_mask drops channels from the
    weights (stochastic WCAM)."""
    features = model.features(x)
    logits = model.head(features.mean(dim=-1))
    target = resolve_targets(logits, target)
    weights = model.head.weight[target]
    if channel_mask is not None:
        weights = weights * channel_mask
    return logits, weighted_channel_sum(weights, features, relu), target


def logits_and_grad_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int | torch.Tensor | None = None,
                        relu: bool = True, create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, Grad-CAM map at `layer`'s resolution, target) through a forward hook, for any model; channel weights
    are the summed gradients of the target logit. create_graph keeps the map differentiable (WCAM's exact path)."""
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda module, inputs, output: captured.append(output))
    try:
        with torch.enable_grad():
            logits = model(x)
            if not captured or captured[-1].ndim != 3:
                raise HeartSightError("Grad-CAM needs a layer with (N, channels, time) output, e.g. a Conv1d block")
            activations = captured[-1]
            target = resolve_targets(logits, target)
            gradients, = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), activations,
                                             create_graph=create_graph)
    finally:
        handle.remove()
    return logits, weighted_channel_sum(gradients.sum(dim=-1), activations, relu), target


class Attribution(ABC):
    """Base class: an explainer built from a model; `attribute` returns a trace aligned with the input."""

    def __init__(self, model: nn.Module):
        self.model = model

    @abstractmethod
    def attribute(self, x: torch.Tensor, target: int | torch.Tensor | None = None) -> torch.Tensor:
        ...


class ClassActivationMap(Attribution):
    """CAM (Zhou et al., CVPR 2016) in closed form: head weights of the target applied to the last block's maps.

    Needs the zoo's head (`model.features` then mean over time then `model.head`, one nn.Linear).
    relu=True keeps the evidence *for* the target, as Grad-CAM and WCAM do.
    """

    def __init__(self, model: nn.Module, relu: bool = True):
        super().__init__(model)
        if not has_gap_linear_head(model):
            raise HeartSightError(
                f"{type(model).__name__} has no global-average-pool + linear head (model.features, model.head); "
                "use GradCam, which works for any model"
            )
        self.relu = relu

    def attribute(self, x: torch.Tensor, target: int | torch.Tensor | None = None) -> torch.Tensor:
        _check_input(x)
        with torch.no_grad():
            _, maps, _ = logits_and_cam(self.model, x, target, self.relu)
        return upsample(maps, x.shape[-1])


class GradCam(Attribution):
    """Grad-CAM (Selvaraju et al., ICCV 2017) at any layer, through hooks: works for any model.

    Channel weights are the *summed* gradients of the target output over time (WCAM's definition; the
    paper averages, which only rescales the map by the layer length). relu=True as in the paper.
    """

    def __init__(self, model: nn.Module, layer: nn.Module | None = None, relu: bool = True):
        super().__init__(model)
        if layer is None:
            layer = getattr(model, "features", None)
            if layer is None:
                raise HeartSightError(f"{type(model).__name__}: name the layer to explain (layer=...)")
        if not any(module is layer for module in model.modules()):
            raise HeartSightError("the Grad-CAM layer is not a module of this model")
        self.layer = layer
        self.relu = relu

    def attribute(self, x: torch.Tensor, target: int | torch.Tensor | None = None) -> torch.Tensor:
        _check_input(x)
        _, maps, _ = logits_and_grad_cam(self.model, self.layer, x, target, self.relu)
        return upsample(maps.detach(), x.shape[-1])


def _input_gradients(model: nn.Module, x: torch.Tensor, target) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        index = resolve_targets(logits, target)
        gradients, = torch.autograd.grad(logits.gather(1, index[:, None]).sum(), x)
    return gradients, index


class InputXGradient(Attribution):
    """Input times gradient (Shrikumar et al. 2016), summed over channels: signed, per sample."""

    def attribute(self, x: torch.Tensor, target: int | torch.Tensor | None = None) -> torch.Tensor:
        _check_input(x)
        gradients, _ = _input_gradients(self.model, x, target)
        return (gradients * x).sum(dim=1).detach()


class IntegratedGradients(Attribution):
    """Integrated Gradients (Sundararajan et al., ICML 2017) from a zero baseline, Riemann midpoint rule.

    Summed over channels. Completeness: the trace sums to f(x) - f(0) up to the integration error.
    """

    def __init__(self, model: nn.Module, steps: int = 32):
        super().__init__(model)
        if steps < 1:
            raise HeartSightError(f"Integrated Gradients needs at least 1 step, got {steps}")
        self.steps = steps

    def attribute(self, x: torch.Tensor, target: int | torch.Tensor | None = None) -> torch.Tensor:
        _check_input(x)
        with torch.no_grad():
            index = resolve_targets(self.model(x), target)  # the target at x, not along the path
        total = torch.zeros_like(x)
        for step in range(self.steps):
            alpha = (step + 0.5) / self.steps
            gradients, _ = _input_gradients(self.model, alpha * x, index)
            total += gradients
        return (x * total / self.steps).sum(dim=1).detach()
