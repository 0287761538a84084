"""Structured integer weights of the seed compression methods, as Conv1d weight parametrizations of a QAT GapCnn.

Each form is what a C kernel exploits (firmware_export/runtime/hs_kernels.c), and each keeps the network a GapCnn
whose `conv.weight` is the effective float weight, so training, WCAM, the explainer and the integer export see
one function of the same weights:

- KernelCodebook (kernel quantization, Yu et al. 2020): every length-k kernel w[o, i] is scale[o] * c[index[o, i]],
  with 2**bits codewords per layer quantized to 6 bits (integers in [-31, 31]). The per-output-channel scale is
  free on the device: the requantization multiplier of channel o already carries it.
- UnifiedBlocks (micro-structured weight unification, Lin et al. 2021): blocks of weights (input channels at one
  tap, or taps of one kernel) share one magnitude and keep their signs; a zero magnitude prunes the block.
  Magnitudes are int8 per output channel.
- GroupMask (MPDCompress, Supic et al. 2018): a permuted block-diagonal 0/1 mask on (output, input) channels;
  output channel o talks to input channel i only when their groups agree, so the layer is a grouped convolution
  once its channels are reordered.

`integer_weight(conv)` gives what the exporter stores: the int8 weight, its per-channel scale and the structure.
`structure_of(model)` / `restore_structure(model, structure)` carry the structure in a model card, so a
compressed model reloads.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from models.architectures import convolutions
from models.quantization import WEIGHT_MAX, SymmetricPerChannelInt8, weight_scales

CODEWORD_MAX = 31  # 6-bit signed codewords
BLOCK_AXES = ("channels", "taps")


class KernelCodebook(nn.Module):
    """weight[o, i, :] = scale[o] / 31 * round(31 * codebook)[index[o, i]]; the parametrization's original is the
    codebook (codes, kernel) in units of each channel's scale (|c| <= 1)."""

    def __init__(self, index: torch.Tensor, scale: torch.Tensor, codebook: torch.Tensor):
        super().__init__()
        self.register_buffer("index", index.long())
        self.scale = nn.Parameter(scale.float().clone())
        self.initial_codebook = codebook.float().clone()

    def codewords(self, codebook: torch.Tensor) -> torch.Tensor:
        """The 6-bit codewords in the same units (straight-through rounding)."""
        return torch.fake_quantize_per_tensor_affine(codebook, 1.0 / CODEWORD_MAX, 0, -CODEWORD_MAX, CODEWORD_MAX)

    def forward(self, codebook: torch.Tensor) -> torch.Tensor:
        return self.scale[:, None, None] * self.codewords(codebook)[self.index]

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return self.initial_codebook


def block_shape(weight_shape: tuple[int, int, int], axis: str, size: int) -> tuple[int, int, int]:
    """The shape of per-block values of a (out, in, k) weight: (out, in/size, k) or (out, in, k/size)."""
    out, inputs, kernel = weight_shape
    return (out, inputs // size, kernel) if axis == "channels" else (out, inputs, kernel // size)


def weight_blocks(weight, axis: str, size: int):
    """A weight (torch or numpy, (out, in, k)) as (out, blocks, size): blocks in block_shape's order (the order
    hs_conv1d_unified_relu walks them), each block's weights in order along its axis."""
    out, inputs, kernel = weight.shape
    if axis == "channels":
        return weight.reshape(out, inputs // size, size, kernel).swapaxes(2, 3).reshape(out, -1, size)
    return weight.reshape(out, -1, size)


def expand_blocks(values: torch.Tensor, axis: str, size: int) -> torch.Tensor:
    """Per-block values (out, in/size, k) or (out, in, k/size) repeated over their blocks' weights (out, in, k)."""
    return values.repeat_interleave(size, dim=1 if axis == "channels" else 2)


class UnifiedBlocks(nn.Module):
    """weight = magnitude[block] * sign, magnitudes int8 per output channel; the original is the block magnitudes.
    Pruned blocks (alive False) stay zero while the surviving magnitudes are fine-tuned."""

    def __init__(self, axis: str, size: int, signs: torch.Tensor, alive: torch.Tensor, magnitudes: torch.Tensor):
        super().__init__()
        self.axis, self.size = axis, size
        self.register_buffer("signs", signs.to(torch.int8))
        self.register_buffer("alive", alive.bool())
        self.initial_magnitudes = magnitudes.float().clone()

    def quantized(self, magnitudes: torch.Tensor) -> torch.Tensor:
        """Magnitudes on their channel's int8 grid [0, 127] (straight-through rounding); pruned blocks zero."""
        m = magnitudes.clamp(min=0) * self.alive
        scales = m.detach().reshape(len(m), -1).amax(dim=1).clamp(min=1e-8) / WEIGHT_MAX
        return torch.fake_quantize_per_channel_affine(m, scales, torch.zeros(len(m), dtype=torch.int32), 0, 0, WEIGHT_MAX)

    def forward(self, magnitudes: torch.Tensor) -> torch.Tensor:
        return expand_blocks(self.quantized(magnitudes), self.axis, self.size) * self.signs

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return self.initial_magnitudes


class GroupMask(nn.Module):
    """weight * [group of output o == group of input i]: a permuted block-diagonal mask."""

    def __init__(self, out_group: torch.Tensor, in_group: torch.Tensor):
        super().__init__()
        self.register_buffer("out_group", out_group.long())
        self.register_buffer("in_group", in_group.long())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * (self.out_group[:, None, None] == self.in_group[None, :, None])


def parametrization(conv: nn.Conv1d, kind: type) -> nn.Module | None:
    """The conv's weight parametrization of this kind, if it has one."""
    if not parametrize.is_parametrized(conv, "weight"):
        return None
    return next((p for p in conv.parametrizations.weight if isinstance(p, kind)), None)


def replace_weight_form(model: nn.Module, conv: nn.Conv1d, *forms: nn.Module) -> nn.Conv1d:
    """Replace `conv` in model.features by a plain copy (its current effective weight and bias) whose whole weight
    parametrization is `forms`, applied in order; returns the new convolution.

    A fresh module rather than removing the old parametrization: torch's parametrized classes are shared between
    deep copies, so removing one from a copy would strip the weight from the original too.
    """
    position = next(i for i, module in enumerate(model.features) if module is conv)
    fresh = nn.Conv1d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding,
                      bias=conv.bias is not None)
    with torch.no_grad():
        fresh.weight.copy_(conv.weight.detach())
        if conv.bias is not None:
            fresh.bias.copy_(conv.bias.detach())
    for form in forms:
        parametrize.register_parametrization(fresh, "weight", form)
    model.features[position] = fresh
    return fresh


def integer_weight(conv: nn.Conv1d) -> tuple[np.ndarray, np.ndarray, dict | None]:
    """(int8 weight (out, in, k), float64 scale per output channel, structure for the C kernels or None for dense).

    weight ~ int8 * scale[o]. The structure names what the exporter packs: a codebook's codewords and indices, a
    unification's block shape, or a group mask's groups (per output and input channel).
    """
    codebook = parametrization(conv, KernelCodebook)
    if codebook is not None:
        codewords = torch.round(codebook.codewords(conv.parametrizations.weight.original.detach()) * CODEWORD_MAX)
        index = codebook.index
        weight = codewords[index].to(torch.int8).numpy()
        scale = codebook.scale.detach().double().numpy() / CODEWORD_MAX
        return weight, scale, {"kind": "codebook", "codebook": codewords.to(torch.int8).tolist(),
                               "index": index.tolist()}
    w = conv.weight.detach().double()
    scale = weight_scales(w).double()
    weight = torch.clamp(torch.round(w / scale[:, None, None]), -WEIGHT_MAX, WEIGHT_MAX).to(torch.int8).numpy()
    unified = parametrization(conv, UnifiedBlocks)
    if unified is not None:
        return weight, scale.numpy(), {"kind": "unify", "axis": unified.axis, "size": unified.size}
    mask = parametrization(conv, GroupMask)
    if mask is not None:
        return weight, scale.numpy(), {"kind": "grouped", "out_group": mask.out_group.numpy().astype(np.int64),
                                       "in_group": mask.in_group.numpy().astype(np.int64)}
    return weight, scale.numpy(), None


def structure_of(model: nn.Module) -> list[dict | None]:
    """Per convolution, what restore_structure needs to rebuild its form before loading the weights (for the card)."""
    described = []
    for conv in convolutions(model):
        codebook, unified, mask = (parametrization(conv, kind) for kind in (KernelCodebook, UnifiedBlocks, GroupMask))
        if codebook is not None:
            described.append({"kind": "codebook", "codes": int(conv.parametrizations.weight.original.shape[0])})
        elif unified is not None:
            described.append({"kind": "unify", "axis": unified.axis, "size": unified.size})
        elif mask is not None:
            described.append({"kind": "grouped"})
        else:
            described.append(None)
    return described


def restore_structure(model: nn.Module, structure: list[dict | None]) -> nn.Module:
    """Give a freshly built QAT model's convolutions the forms `structure` names (placeholder values, to be replaced
    by load_state_dict)."""
    for conv, form in zip(convolutions(model), structure):
        if form is None:
            continue
        out, inputs, kernel = conv.weight.shape
        if form["kind"] == "codebook":
            replace_weight_form(model, conv, KernelCodebook(torch.zeros(out, inputs, dtype=torch.long), torch.ones(out),
                                                     torch.zeros(form["codes"], kernel)))
        elif form["kind"] == "unify":
            blocks = block_shape((out, inputs, kernel), form["axis"], form["size"])
            replace_weight_form(model, conv, UnifiedBlocks(form["axis"], form["size"], torch.ones(out, inputs, kernel),
                                                    torch.ones(blocks, dtype=torch.bool), torch.zeros(blocks)))
        else:
            replace_weight_form(model, conv, GroupMask(torch.zeros(out, dtype=torch.long), torch.zeros(inputs, dtype=torch.long)),
                                SymmetricPerChannelInt8())
    return model
