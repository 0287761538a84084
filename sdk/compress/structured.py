"""The seed compression methods 2-4 on a QAT GapCnn: unify (ADMM), mpd (group masks) and kernel-codebook (k-means).

Each turns the convolutions of a batch-norm-folded, activation-quantized model into a models.structured form;
sdk.compress.methods fine-tunes the result like any other method (plain or with WCAM).

Choices where the papers are silent (seed-methods.md, section 2-4):
- Every method starts from the teacher pruned to the plan's widths (--ratio, as qat), so that it is compared with
  int8 QAT at the same widths.
- unify: the pruning criterion is a block's mean |w| (the projection's error when a block is zeroed instead of
  unified is block size * mean|w|**2), per layer. ADMM runs one epoch per round with rho tripling each round. The
  first convolution stays dense int8: it holds ~2% of the weights, and the raw signal's scale folded into it makes
  its weights ~20x the others', too far for the W-step's optimiser steps to reach the structure in a few epochs.
- mpd: the first convolution (the signal channels) stays dense: a group there would see one input signal only.
  Each later layer draws its own output and input groups, so groups mix from layer to layer as in the paper's
  independent permutations; the exporter folds the output permutation into the channel order and reads the
  inputs through an index table.
- kernel-codebook: k-means over kernels normalized by their output channel's largest |w|; the per-channel scale
  is refitted by least squares to the codewords and fine-tuned with them (it costs nothing on the device). Layers
  take their codebooks one at a time, each followed by an epoch of fine-tuning (sdk.compress.methods).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.cluster.vq import kmeans2
from torch import nn

from models.architectures import convolutions
from models.quantization import SymmetricPerChannelInt8
from models.structured import (
    BLOCK_AXES,
    GroupMask,
    KernelCodebook,
    UnifiedBlocks,
    block_shape,
    expand_blocks,
    replace_weight_form,
    weight_blocks,
)
from sdk.errors import HeartSightError

ADMM_RHO = 100.0  # first round's rho (on distances relative to each layer's norm); each round triples it
ADMM_GROWTH = 3.0


def parse_block(block: str) -> tuple[str, int]:
    """'channels:4' or 'taps:7' -> (axis, size); a clear error otherwise."""
    axis, _, size = block.partition(":")
    if axis not in BLOCK_AXES or not size.isdigit() or int(size) < 1:
        raise HeartSightError(f"--block must be channels:N (N input channels at one tap) or taps:N (N taps of one "
                              f"kernel), got {block!r}")
    return axis, int(size)


def layer_shapes(in_channels: int, widths: tuple[int, ...], kernel: int) -> list[tuple[int, int, int]]:
    """(out, in, kernel) of every convolution of a GapCnn."""
    return [(w, i, kernel) for w, i in zip(widths, (in_channels, *widths[:-1]))]


def check_fits(method: str, shapes: list[tuple[int, int, int]], block: str, groups: int, bits: int) -> None:
    """Refuse, with the first layer that cannot honour it, an option the method cannot apply to these layers."""
    for layer, (out, inputs, kernel) in enumerate(shapes):
        where = f"conv {layer} has {out} output channels, {inputs} input channels and {kernel} taps"
        if method == "unify" and layer > 0:
            axis, size = parse_block(block)
            along = inputs if axis == "channels" else kernel
            if along % size:
                raise HeartSightError(f"--block {block} does not divide the layer: {where}; choose a block size "
                                      f"that divides {along} (the first layer stays dense)")
        elif method == "mpd" and layer > 0 and (out % groups or inputs % groups):
            raise HeartSightError(f"--groups {groups} cannot split the layer into equal groups: {where}; choose a "
                                  f"divisor of both (the first layer stays dense)")
        elif method == "kernel-codebook" and 2 ** bits > out * inputs:
            raise HeartSightError(f"--bits {bits} asks for {2 ** bits} codewords but {where}, {out * inputs} kernels; "
                                  f"choose --bits {int(np.log2(out * inputs))} or fewer (or a smaller --ratio)")


# unify --------------------------------------------------------------------------------------------------------


def project_unified(weight: torch.Tensor, axis: str, size: int, prune_ratio: float):
    """The nearest structured weight: per block mean |w| with the weights' signs, the prune_ratio share of blocks
    with the smallest mean |w| zeroed. Returns (projected weight, signs, alive, magnitudes)."""
    magnitudes = weight_blocks(weight, axis, size).abs().mean(dim=-1).reshape(block_shape(weight.shape, axis, size))
    alive = torch.ones_like(magnitudes, dtype=torch.bool)
    pruned = int(round(prune_ratio * magnitudes.numel()))
    if pruned:
        alive.view(-1)[torch.argsort(magnitudes.flatten())[:pruned]] = False
    magnitudes = magnitudes * alive
    signs = torch.where(weight >= 0, 1.0, -1.0)
    return expand_blocks(magnitudes, axis, size) * signs, signs, alive, magnitudes


class Admm:
    """ADMM for min loss(W) s.t. W in the unified set: the W-step is SGD on loss + rho/2 ||W - Z + U||^2 (the
    `penalty`, each layer's term divided by its initial ||W||^2 so that one rho suits layers whose folded batch norm
    gave them different scales), `update` makes the Z-step (projection of W + U) and the dual step, once per round."""

    def __init__(self, model: nn.Module, axis: str, size: int, prune_ratio: float):
        self.axis, self.size, self.prune_ratio = axis, size, prune_ratio
        self.weights = [conv.parametrizations.weight.original for conv in convolutions(model)[1:]]
        self.rho = ADMM_RHO
        self.dual = [torch.zeros_like(w) for w in self.weights]
        self.norms = [float(w.detach().pow(2).sum().clamp(min=1e-12)) for w in self.weights]
        self.target = [self.project(w.detach()) for w in self.weights]

    def project(self, weight: torch.Tensor) -> torch.Tensor:
        return project_unified(weight, self.axis, self.size, self.prune_ratio)[0]

    def penalty(self) -> torch.Tensor:
        return self.rho / 2 * sum((w - z + u).pow(2).sum() / n
                                  for w, z, u, n in zip(self.weights, self.target, self.dual, self.norms))

    @torch.no_grad()
    def update(self) -> float:
        """Z- and dual step; returns how far W is from the structure: the mean over layers of ||W - Z||^2 / ||W||^2."""
        self.target = [self.project(w + u) for w, u in zip(self.weights, self.dual)]
        for w, z, u in zip(self.weights, self.target, self.dual):
            u.add_(w - z)
        self.rho *= ADMM_GROWTH
        return float(np.mean([float((w - z).pow(2).sum() / w.pow(2).sum().clamp(min=1e-12))
                              for w, z in zip(self.weights, self.target)]))


@torch.no_grad()
def unify(model: nn.Module, axis: str, size: int, prune_ratio: float) -> nn.Module:
    """Hard projection: every convolution after the first becomes UnifiedBlocks (signs and zero blocks frozen,
    magnitudes trained)."""
    for conv in convolutions(model)[1:]:
        _, signs, alive, magnitudes = project_unified(conv.parametrizations.weight.original.detach(), axis, size,
                                                       prune_ratio)
        replace_weight_form(model, conv, UnifiedBlocks(axis, size, signs, alive, magnitudes))
    return model


# mpd ----------------------------------------------------------------------------------------------------------


def group_masks(model: nn.Module, groups: int, seed: int) -> nn.Module:
    """Random permuted block-diagonal masks on every convolution after the first (in place; returns the model)."""
    rng = np.random.default_rng(seed)

    def random_groups(channels: int) -> torch.Tensor:
        return torch.from_numpy(rng.permutation(np.repeat(np.arange(groups), channels // groups)))

    with torch.no_grad():
        for conv in convolutions(model)[1:]:
            out, inputs, _ = conv.weight.shape
            replace_weight_form(model, conv, GroupMask(random_groups(out), random_groups(inputs)), SymmetricPerChannelInt8())
    return model


# kernel-codebook ----------------------------------------------------------------------------------------------


@torch.no_grad()
def kernel_codebooks(model: nn.Module, bits: int, seed: int, layers: list[int] | None = None) -> nn.Module:
    """The kernels of every convolution (or of `layers`) replaced by indices into a k-means codebook of 2**bits
    codewords."""
    for layer, conv in enumerate(convolutions(model)):
        if layers is not None and layer not in layers:
            continue
        weight = conv.weight.detach().double()
        out, inputs, kernel = weight.shape
        peak = weight.abs().reshape(out, -1).amax(dim=1).clamp(min=1e-12)
        kernels = (weight / peak[:, None, None]).reshape(-1, kernel).numpy()
        codebook, labels = kmeans2(kernels, 2 ** bits, minit="++", seed=seed * 1000 + layer)
        codebook = torch.from_numpy(np.clip(codebook, -1.0, 1.0))
        index = torch.from_numpy(labels).reshape(out, inputs)
        shared = codebook[index]  # (out, in, k) in units of the channel's scale
        scale = (weight * shared).sum(dim=(1, 2)) / shared.pow(2).sum(dim=(1, 2)).clamp(min=1e-12)
        replace_weight_form(model, conv, KernelCodebook(index, scale.clamp(min=1e-8), codebook))
    return model
