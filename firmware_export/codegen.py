"""C99 code generation: a self-contained library (model + kernels) and its static flash/RAM/compute report.

The layer sequence is written as straight-line calls into firmware_export/runtime/hs_kernels.c. Every
activation lives in one static arena; offsets come from the tensors' live ranges (each is live from the
layer that writes it to the last layer that reads it; the last block's output stays live for hs_explain).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_export.head_update import backbone_sha256
from firmware_export.quantize import QuantizedConv, QuantizedModel
from models.structured import weight_blocks
from sdk.errors import HeartSightError

RUNTIME = Path(__file__).resolve().parent / "runtime"
RUNTIME_FILES = ("hs_kernels.h", "hs_kernels.c", "hs_head.h", "hs_head.c", "hs_sha256.h", "hs_sha256.c")
C_FILES = ("heartsight_model.h", "heartsight_model.c", *RUNTIME_FILES)  # what a firmware build compiles
C_SOURCES = tuple(name for name in C_FILES if name.endswith(".c"))
# `--kernels cmsis-nn`: the convolutions on Arm's CMSIS-NN (runtime/hs_cmsis.c), with these files too.
KERNELS = ("portable", "cmsis-nn")
CMSIS_FILES = ("hs_cmsis.h", "hs_cmsis.c")
# Measured with arm-none-eabi-gcc 12.2 -O2 -mcpu=cortex-m4 -mthumb (the reference firmware's flags, which link only
# the functions used): the kernels but the convolutions (~0.8 KB) and the generated hs_infer/hs_explain/
# hs_quantize_input (~0.7 KB); `verify-firmware --qemu` reports the exact image sizes.
CODE_BYTES_ESTIMATE = 1600
# Each convolution kernel a model's layers use (tests/test_firmware_target.py measures them again); the dense and
# grouped kernels share conv1d_channel.
CODE_BYTES_BY_KERNEL = {"dense": 134, "grouped": 168, "codebook": 760, "unify": 1048}
SHARED_CONV_CODE_BYTES = {"conv1d_channel": 862}
CODEBOOK_TIME_BLOCK = 16  # HS_CODEBOOK_TIME_BLOCK in hs_kernels.h
# The deepest call, measured with -fstack-usage: hs_infer (64 B) -> a convolution kernel -> hs_requantize (8 B); the
# kernels' own stack: hs_conv1d_relu 96 B or hs_conv1d_grouped_relu 104 B -> conv1d_channel 136 B (four outputs at a
# time, their sums in registers), hs_conv1d_codebook_relu 152 B (its accumulators are the static
# scratch), hs_conv1d_unified_relu 656 B (a block's accumulator and its signed sums).
INFER_STACK_BYTES = 72
STACK_BYTES_BY_KERNEL = {"dense": 232, "grouped": 240, "codebook": 152, "unify": 656}
# Head updates (hs_set_head), measured the same way: hs_head.c 353 B and hs_sha256.c 1,642 B of code, hs_set_head
# 172 B; the deepest call hs_set_head -> hs_head_check (72 B) -> hs_hmac_sha256 (248 B) -> hs_sha256_final (56 B) ->
# hs_sha256_update (32 B) -> compress (144 B) needs ~550 B of stack.
HEAD_UPDATE_CODE_BYTES = 2176
HEAD_UPDATE_STACK_BYTES = 552


@dataclass(frozen=True)
class Tensor:
    name: str
    channels: int
    length: int
    produced: int  # index of the layer that writes it
    last_read: int  # index of the last layer that reads it (a past-the-end index keeps it live for hs_explain)
    pad: tuple[int, int] = (0, 0)  # rows of room before and after the data (a CMSIS-NN convolution's input)

    @property
    def size(self) -> int:
        return self.channels * (self.pad[0] + self.length + self.pad[1])


def pools_in_kernel(conv: QuantizedConv) -> bool:
    """Whether the convolution's kernel max-pools its output itself (the dense and grouped kernels' `pool`)."""
    return conv.pool_after and conv.kind in ("dense", "grouped")


def activation_tensors(model: QuantizedModel, kernels: str = "portable") -> list[Tensor]:
    """The arena's tensors in layer order: each conv output (pooled when its kernel pools), then its pooled copy when
    the block pools after a kernel that cannot. For CMSIS-NN, channels-last: first the input transposed, last the
    last block transposed back to channel-major for the sums and the explainer (HeartSight's); each convolution's
    input has its 'same' padding as rows of room around it (cmsis_padding)."""
    cmsis = kernels == "cmsis-nn"
    pads = [cmsis_padding(conv) if cmsis else (0, 0) for conv in model.convs] + [(0, 0)]
    tensors = [Tensor("input_channels_last", len(model.input_channels), model.window, 0, 1, pads[0])] if cmsis else []
    layer, length = len(tensors), model.window
    for i, conv in enumerate(model.convs):
        channels = conv.weight.shape[0]
        fused = not cmsis and pools_in_kernel(conv)
        tensors.append(Tensor(f"block{i}", channels, length // 2 if fused else length, layer, layer + 1,
                              (0, 0) if conv.pool_after else pads[i + 1]))
        layer += 1
        if fused:
            length //= 2
        elif conv.pool_after:
            length //= 2
            tensors.append(Tensor(f"block{i}_pooled", channels, length, layer, layer + 1, pads[i + 1]))
            layer += 1
    last = tensors[-1]
    if cmsis:
        tensors.append(Tensor("last_channel_major", last.channels, length, layer, layer + 2))
    else:  # read by the sums and hs_explain
        tensors[-1] = Tensor(last.name, last.channels, last.length, last.produced, layer + 1)
    return tensors


def cmsis_padding(conv: QuantizedConv) -> tuple[int, int]:
    """Rows of the input's 'same' padding before and after, as hs_conv1d_relu pads: kernel / 2 before, the rest
    after. On CMSIS-NN the padding lives in the arena around the input, so that every output's receptive field is one
    contiguous run of input rows (hs_cmsis_conv1d_relu)."""
    kernel = conv.weight.shape[2]
    return kernel // 2, kernel - 1 - kernel // 2


def check_kernels(model: QuantizedModel, kernels: str) -> None:
    """Refuse, before anything is written, a kernel backend that cannot run this model exactly."""
    if kernels not in KERNELS:
        raise HeartSightError(f"unknown --kernels {kernels!r}: choose one of {', '.join(KERNELS)}")
    if kernels == "cmsis-nn":
        for i, conv in enumerate(model.convs):
            if conv.kind != "dense":
                raise HeartSightError(f"--kernels cmsis-nn runs dense convolutions only, and conv {i} is {conv.kind}: "
                                      "export this model with the portable kernels (--kernels portable)")
            if (np.asarray(conv.shift) > 0).any():
                raise HeartSightError(f"conv {i} has a requantization multiplier above 1, which CMSIS-NN shifts "
                                      "without saturating: export it with the portable kernels (--kernels portable)")


def arena_layout(tensors: list[Tensor]) -> tuple[dict[str, int], int, int]:
    """(offset per tensor, arena bytes, lower bound = the most bytes live at once).

    Tensors of a chain alternate between the bottom and the top of the arena, so two that are live together
    never overlap and the arena equals the largest pair of live activations.
    """
    peak = max(sum(t.size for t in tensors if t.produced <= layer <= t.last_read)
               for layer in range(max(t.last_read for t in tensors) + 1))
    arena = peak
    offsets = {t.name: (0 if i % 2 == 0 else arena - t.size) for i, t in enumerate(tensors)}
    for a in tensors:  # check the placement against the live ranges
        for b in tensors:
            live_together = a is not b and a.produced <= b.last_read and b.produced <= a.last_read
            if live_together and offsets[a.name] < offsets[b.name] + b.size and offsets[b.name] < offsets[a.name] + a.size:
                raise AssertionError(f"arena placement overlaps {a.name} and {b.name}")
    return offsets, arena, peak


def head_bytes(model: QuantizedModel) -> int:
    """The head as hs_set_head keeps it in RAM: int8 weights, four int32 and one float per class, version, logit
    quantization."""
    return model.head_weight.size + 20 * len(model.classes) + 12


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned values of `bits` bits each, packed LSB first into bytes (as hs_kernels.c's read_bits reads them)."""
    values = np.asarray(values, np.int64).reshape(-1)
    if values.size and (values.min() < 0 or values.max() >= 1 << bits):
        raise ValueError(f"values do not fit {bits} bits")
    stream = ((values[:, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(stream, bitorder="little")


def codebook_bits(conv: QuantizedConv) -> int:
    """Bits of each packed index of a codebook convolution."""
    return max(1, int(np.ceil(np.log2(len(conv.structure["codebook"])))))


def conv_storage(conv: QuantizedConv) -> dict[str, tuple[str, np.ndarray]]:
    """The arrays that hold a convolution's weights in flash, by name suffix: (C type, values) as stored, packed.

    Derived from the dense int8 weight (the specification), checked to have the structure claimed.
    """
    structure = conv.structure
    if conv.kind == "dense":
        return {"weight": ("int8_t", conv.weight)}
    if conv.kind == "grouped":
        order, groups = np.asarray(structure["input_order"]), structure["groups"]
        out, inputs, _ = conv.weight.shape
        per_group = inputs // groups
        rows = order.reshape(groups, per_group)[np.arange(out) // (out // groups)]  # (out, in / groups)
        return {"weight": ("int8_t", np.take_along_axis(conv.weight, rows[:, :, None], axis=1)),
                "inputs": ("uint8_t", order)}
    if conv.kind == "codebook":
        codebook, index = np.asarray(structure["codebook"]), np.asarray(structure["index"])
        if not np.array_equal(codebook[index], conv.weight):
            raise AssertionError("a codebook convolution's weight is not its codewords at its indices")
        return {"codebook": ("int8_t", codebook), "index": ("uint8_t", pack_bits(index.T, codebook_bits(conv)))}
    blocks = weight_blocks(conv.weight.astype(np.int64), structure["axis"], structure["size"])
    magnitude = np.abs(blocks).max(axis=-1)
    if not np.array_equal(np.abs(blocks), np.broadcast_to(magnitude[..., None], blocks.shape)):
        raise AssertionError("a unified convolution's block does not share one magnitude")
    return {"magnitude": ("uint8_t", magnitude), "signs": ("uint8_t", pack_bits(blocks[magnitude > 0] < 0, 1))}


def weight_storage_bytes(conv: QuantizedConv) -> int:
    return sum(values.size for _, values in conv_storage(conv).values())


def codebook_buffers(model: QuantizedModel) -> tuple[int, int]:
    """(int32 scratch values, int16 window values) the codebook kernel shares across layers (HS_CODEBOOK_SCRATCH,
    HS_CODEBOOK_WINDOW); (0, 0) without codebook layers."""
    layers = [c for c in model.convs if c.kind == "codebook"]
    if not layers:
        return 0, 0
    return (max(c.weight.shape[0] + len(c.structure["codebook"]) for c in layers) * CODEBOOK_TIME_BLOCK,
            max(c.weight.shape[2] for c in layers) + CODEBOOK_TIME_BLOCK - 1)


def kernel_kinds(model: QuantizedModel) -> list[str]:
    return sorted({c.kind for c in model.convs})


def static_report(model: QuantizedModel, head_updates: bool, kernels: str = "portable") -> dict:
    """Flash, RAM and MACs of the generated library; with head_updates the head lives in RAM (hs_set_head). For
    CMSIS-NN kernels the code and stack are those of the portable build (CMSIS-NN's own are measured on the target:
    verify-firmware --qemu)."""
    tensors = activation_tensors(model, kernels)
    _, arena, peak = arena_layout(tensors)
    out_channels = sum(c.weight.shape[0] for c in model.convs) + len(model.classes)
    conv_weights = sum(weight_storage_bytes(c) for c in model.convs)
    conv_weight_count = sum(c.weight.size for c in model.convs)
    weights = conv_weights + model.head_weight.size
    codebook_scratch, codebook_window = codebook_buffers(model)
    bias = 4 * out_channels
    # per channel an int32 multiplier and an int8 shift (the head's shift and trace shift are int32: hs_head_t)
    requantization = 5 * out_channels + 7 * len(model.classes)
    # channel sums, coarse CAM, and the codebook kernel's scratch
    scratch = 4 * model.last.weight.shape[0] + 2 * model.last_length + 4 * codebook_scratch + 2 * codebook_window
    kinds = kernel_kinds(model)
    code = CODE_BYTES_ESTIMATE + sum(CODE_BYTES_BY_KERNEL[k] for k in kinds) \
        + (SHARED_CONV_CODE_BYTES["conv1d_channel"] if {"dense", "grouped"} & set(kinds) else 0) \
        + (HEAD_UPDATE_CODE_BYTES if head_updates else 0)
    stack = max(INFER_STACK_BYTES + max(STACK_BYTES_BY_KERNEL[k] for k in kinds),
                HEAD_UPDATE_STACK_BYTES if head_updates else 0)
    flash = weights + bias + requantization + code
    head = head_bytes(model) if head_updates else 0
    ram = arena + scratch + head + stack
    return {
        "model": model.source.get("model", model.name), "sha256": model.source.get("sha256", ""),
        "quantization": model.source.get("quantization", ""),
        "flash_bytes": flash,
        "flash": {"weights": weights, "bias": bias, "requantization": requantization, "code_estimate": code},
        "ram_bytes": ram,
        "ram": {"arena": arena, "scratch": scratch, "head": head, "stack_estimate": stack},
        "head_updates": head_updates,
        "kernels": kernels,
        "macs": model.macs(),
        "conv_weights": {"count": conv_weight_count, "stored_bytes": conv_weights,
                         "bits_per_weight": round(8 * conv_weights / conv_weight_count, 4),
                         "kernels": kinds},
        "lower_bounds": {"flash_int8_weights": weights, "ram_largest_live_pair": peak},
        "input": {"channels": len(model.input_channels), "length": model.window, "fs": model.fs},
    }


def format_report(report: dict) -> str:
    f, r = report["flash"], report["ram"]
    return "\n".join([
        f"model {report['model']} ({report['quantization']})",
        f"flash {report['flash_bytes']:,} bytes: weights {f['weights']:,}, bias {f['bias']:,}, "
        f"requantization {f['requantization']:,}, code ~{f['code_estimate']:,}",
        f"  lower bound (int8 weights): {report['lower_bounds']['flash_int8_weights']:,}",
        f"  conv weights as stored: {report['conv_weights']['stored_bytes']:,} bytes, "
        f"{report['conv_weights']['bits_per_weight']:g} bits per weight ({', '.join(report['conv_weights']['kernels'])})",
        f"ram {report['ram_bytes']:,} bytes: arena {r['arena']:,}, scratch {r['scratch']:,}, head {r['head']:,}, "
        f"stack ~{r['stack_estimate']:,}",
        f"  lower bound (largest pair of live activations): {report['lower_bounds']['ram_largest_live_pair']:,}",
        f"compute {report['macs']:,} MACs per inference",
    ])


def _array(c_type: str, name: str, values: np.ndarray) -> str:
    flat = np.asarray(values).reshape(-1)
    body = ",\n".join("    " + ", ".join(str(int(v)) for v in flat[i: i + 16]) for i in range(0, len(flat), 16))
    return f"static const {c_type} {name}[{len(flat)}] = {{\n{body}\n}};\n"


def float_literal(value: float) -> str:
    """A float constant C reads back exactly: 9 significant digits, with a decimal point (128f is not C; 128.0f is)."""
    text = f"{float(np.float32(value)):.9g}"
    if text in ("inf", "-inf"):
        return text.replace("inf", "INFINITY")
    return f"{text}{'' if any(c in text for c in '.en') else '.0'}f"


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _bytes_literal(hex_digest: str) -> str:
    return "{" + ", ".join(f"0x{hex_digest[i: i + 2]}" for i in range(0, len(hex_digest), 2)) + "}"


def _header(model: QuantizedModel, report: dict, int8_sha256: str, backbone_sha256: str) -> str:
    kernels = report["kernels"]
    classes, channels = len(model.classes), model.last.weight.shape[0]
    updates = report["head_updates"]
    set_head = """
/* Replaces the head (weights, scales, version) with a signed update (firmware_export/head_update.py) for this
 * backbone, without reflashing. key: this device's HMAC-SHA256 key. Returns HS_HEAD_OK, or the first failed
 * check's HS_HEAD_* code (hs_head.h) and keeps the head in use. The blob is copied: the caller may reuse it. */
int hs_set_head(const uint8_t *blob, uint32_t size, const uint8_t *key, uint32_t key_size);
""" if updates else ""
    return f"""/* HeartSight model {model.source.get('model', model.name)} {model.source.get('version', '')}: generated by
 * `heartsight export`; do not edit. Quantization: {model.source.get('quantization', '')}.
 * flash ~{report['flash_bytes']} bytes, RAM ~{report['ram_bytes']} bytes, {report['macs']} MACs per inference. */
#ifndef HEARTSIGHT_MODEL_H
#define HEARTSIGHT_MODEL_H

#include <stdint.h>
#include "hs_head.h"

#define HS_MODEL_NAME {_c_string(model.source.get('model', model.name))}
#define HS_MODEL_VERSION {_c_string(model.source.get('version', ''))}
#define HS_MODEL_SHA256 {_c_string(model.source.get('sha256', ''))}
/* sha256 of the integer model (quantized_model.json) this library implements: what alerts report. */
#define HS_INT8_SHA256 {_c_string(int8_sha256)}
/* sha256 of its backbone (all but the head): what a head update must have been fitted on. */
#define HS_BACKBONE_SHA256 {_c_string(backbone_sha256)}
#define HS_FS_HZ {float_literal(model.fs)}
#define HS_INPUT_CHANNELS {len(model.input_channels)}
#define HS_INPUT_LENGTH {model.window}
#define HS_NUM_CLASSES {classes}
#define HS_LAST_CHANNELS {channels}
#define HS_LAST_LENGTH {model.last_length}
#define HS_LAST_SCALE {float_literal(model.last.output_scale)}
#define HS_INPUT_SCALE {float_literal(model.input_scale)}
#define HS_INPUT_ZERO_POINT {model.input_zero_point}
#define HS_ARENA_BYTES {report['ram']['arena']}
/* The convolution kernels: {kernels}{" (Arm CMSIS-NN, hs_cmsis.c; build with CMSIS_NN_DIR)" if kernels == "cmsis-nn" else ""}. */
#define HS_KERNELS {_c_string(kernels)}
/* 1 when the head can be replaced at run time (hs_set_head); a blob for it is HS_HEAD_BLOB_BYTES long. */
#define HS_HEAD_UPDATES {int(updates)}
#define HS_HEAD_BLOB_BYTES HS_HEAD_BLOB_SIZE(HS_NUM_CLASSES, HS_LAST_CHANNELS)

/* Class names in output order. */
extern const char *const hs_class_names[HS_NUM_CLASSES];

/* What an inference leaves for hs_explain and hs_last_sums: the activations (the arena), the pooled sums and the
 * explainer's scratch. hs_infer, hs_explain and hs_last_sums use the library's own; the _with functions use the
 * caller's (sizeof(hs_context_t) bytes, any alignment of the type), so that several streams can run on one library,
 * each with its context, in memory the caller owns. */
typedef struct {{
    int8_t arena[HS_ARENA_BYTES];
    int32_t sums[HS_LAST_CHANNELS];
    int16_t coarse[HS_LAST_LENGTH];{_context_scratch(model, kernels)}
}} hs_context_t;

/* x: [HS_INPUT_CHANNELS][HS_INPUT_LENGTH] preprocessed floats -> q: int8 (the only function using float). */
void hs_quantize_input(const float *x, int8_t *q);
/* Runs the model; logits: [HS_NUM_CLASSES] int8 (real = (q - hs_logit_zero_point()) * hs_logit_scale()).
 * Returns the arg-max class. */
int hs_infer(const int8_t *input, int8_t *logits);
int hs_infer_with(hs_context_t *context, const int8_t *input, int8_t *logits);
/* The saliency trace of class_index for the input of the last hs_infer (on this context): [HS_INPUT_LENGTH] int16
 * >= 0 (real = value * hs_trace_scale(class_index)). An out-of-range class gives an all-zero trace. */
void hs_explain(int class_index, int16_t *trace);
void hs_explain_with(hs_context_t *context, int class_index, int16_t *trace);
/* The last block's activations in the last hs_infer (on this context), summed over time: [HS_LAST_CHANNELS] (the
 * embedding the head reads is sum * HS_LAST_SCALE / HS_LAST_LENGTH). An alert carries them, so the clinic can refit
 * the head. */
void hs_last_sums(int32_t *sums);
void hs_last_sums_with(const hs_context_t *context, int32_t *sums);
/* The head in use: its logit quantization, the real value of one trace step of a class (0 out of range), and its
 * version (0: the head the model was exported with). Alerts report the version. */
float hs_logit_scale(void);
int32_t hs_logit_zero_point(void);
float hs_trace_scale(int class_index);
uint32_t hs_head_version(void);
{set_head}
#endif
"""


def _values(values: np.ndarray) -> str:
    return "{" + ", ".join(str(int(v)) for v in np.asarray(values).reshape(-1)) + "}"


def _head_state(model: QuantizedModel, updates: bool) -> str:
    """The head as one struct: in RAM when hs_set_head may replace it, otherwise const (in flash)."""
    classes, channels = len(model.classes), model.last.weight.shape[0]
    scales = ", ".join(float_literal(s) for s in model.head_weight_scale)
    return f"""typedef struct {{
    uint32_t version;
    float logit_scale;
    int32_t logit_zero_point;
    int8_t weight[{classes * channels}];
    int32_t bias[{classes}];
    int32_t multiplier[{classes}];
    int32_t shift[{classes}];
    int32_t trace_shift[{classes}];
    float weight_scale[{classes}];
}} hs_head_t;

static {"" if updates else "const "}hs_head_t hs_head = {{
    0, {float_literal(model.logit_scale)}, {model.logit_zero_point},
    {_values(model.head_weight)},
    {_values(model.head_bias)},
    {_values(model.head_multiplier)},
    {_values(model.head_shift)},
    {_values(model.trace_shift)},
    {{{scales}}}
}};
"""


def _set_head(backbone_sha256: str) -> str:
    return f"""
static const uint8_t hs_backbone_sha256[32] = {_bytes_literal(backbone_sha256)};

int hs_set_head(const uint8_t *blob, uint32_t size, const uint8_t *key, uint32_t key_size)
{{
    const int status = hs_head_check(blob, size, HS_NUM_CLASSES, HS_LAST_CHANNELS, hs_backbone_sha256,
                                     hs_head.version, key, key_size);
    const uint8_t *p = blob + HS_HEAD_PREFIX_BYTES;
    int c;
    if (status != HS_HEAD_OK) {{
        return status;
    }}
    hs_head.version = hs_read_u32le(blob + 8);
    hs_head.logit_scale = hs_read_f32le(blob + 44);
    hs_head.logit_zero_point = (int32_t)hs_read_u32le(blob + 48);
    memcpy(hs_head.weight, p, sizeof(hs_head.weight));
    p += sizeof(hs_head.weight);
    for (c = 0; c < HS_NUM_CLASSES; c++) {{
        hs_head.bias[c] = (int32_t)hs_read_u32le(p + 4 * c);
        hs_head.multiplier[c] = (int32_t)hs_read_u32le(p + 4 * (HS_NUM_CLASSES + c));
        hs_head.shift[c] = (int32_t)hs_read_u32le(p + 4 * (2 * HS_NUM_CLASSES + c));
        hs_head.trace_shift[c] = (int32_t)hs_read_u32le(p + 4 * (3 * HS_NUM_CLASSES + c));
        hs_head.weight_scale[c] = hs_read_f32le(p + 4 * (4 * HS_NUM_CLASSES + c));
    }}
    return HS_HEAD_OK;
}}
"""


def _source(model: QuantizedModel, updates: bool, backbone_sha256: str, kernels: str) -> str:
    cmsis = kernels == "cmsis-nn"
    tensors = activation_tensors(model, kernels)
    offsets, _, _ = arena_layout(tensors)
    parts = ['/* Generated by `heartsight export`; do not edit. */\n#include <string.h>\n#include "heartsight_model.h"\n'
             '#include "hs_kernels.h"\n' + ('#include "hs_cmsis.h"\n\n' if cmsis else '\n')]
    for i, conv in enumerate(model.convs):
        if cmsis:  # CMSIS-NN's filter layout [out][kernel][in], and its int32 shifts
            parts += [_array("int8_t", f"conv{i}_weight", conv.weight.transpose(0, 2, 1))]
        else:
            parts += [_array(c_type, f"conv{i}_{suffix}", values)
                      for suffix, (c_type, values) in conv_storage(conv).items()]
        parts += [_array("int32_t", f"conv{i}_bias", conv.bias), _array("int32_t", f"conv{i}_multiplier", conv.multiplier),
                  _array("int32_t" if cmsis else "int8_t", f"conv{i}_shift", conv.shift)]
    parts.append(_head_state(model, updates))
    names = ", ".join(_c_string(c) for c in model.classes)
    parts.append(f"""
const char *const hs_class_names[HS_NUM_CLASSES] = {{{names}}};

static hs_context_t hs_own_context;  /* hs_infer's, hs_explain's and hs_last_sums' */

void hs_quantize_input(const float *x, int8_t *q)
{{
    int i;
    for (i = 0; i < HS_INPUT_CHANNELS * HS_INPUT_LENGTH; i++) {{
        float v = x[i] * {float_literal(1.0 / model.input_scale)};
        float fraction;
        int32_t r;
        if (v != v) {{
            v = 0.0f; /* NaN */
        }}
        v = v > 256.0f ? 256.0f : (v < -256.0f ? -256.0f : v);
        r = (int32_t)v;
        fraction = v - (float)r;
        r += fraction >= 0.5f ? 1 : (fraction <= -0.5f ? -1 : 0);
        r += HS_INPUT_ZERO_POINT;
        q[i] = (int8_t)(r < -128 ? -128 : (r > 127 ? 127 : r));
    }}
}}

float hs_logit_scale(void)
{{
    return hs_head.logit_scale;
}}

int32_t hs_logit_zero_point(void)
{{
    return hs_head.logit_zero_point;
}}

uint32_t hs_head_version(void)
{{
    return hs_head.version;
}}

float hs_trace_scale(int class_index)
{{
    float scale;
    int32_t i;
    if (class_index < 0 || class_index >= HS_NUM_CLASSES) {{
        return 0.0f;
    }}
    scale = {float_literal(model.last.output_scale)} * hs_head.weight_scale[class_index];
    for (i = 0; i < hs_head.trace_shift[class_index]; i++) {{
        scale *= 2.0f;
    }}
    return scale;
}}

int hs_infer(const int8_t *input, int8_t *logits)
{{
    return hs_infer_with(&hs_own_context, input, logits);
}}

void hs_explain(int class_index, int16_t *trace)
{{
    hs_explain_with(&hs_own_context, class_index, trace);
}}

void hs_last_sums(int32_t *sums)
{{
    hs_last_sums_with(&hs_own_context, sums);
}}

int hs_infer_with(hs_context_t *context, const int8_t *input, int8_t *logits)
{{
""")
    parts.append((_cmsis_layers if cmsis else _portable_layers)(model, tensors, offsets))
    last = tensors[-1]  # what the sums and the explainer read: channel-major
    source, channels, length = f"context->arena + {offsets[last.name]}", last.channels, last.length
    zero_point = model.last.output_zero_point
    parts.append(f"""    hs_channel_sums({source}, {channels}, {length}, {zero_point}, context->sums);
    return hs_linear_from_sums(context->sums, {channels}, {length}, hs_head.weight, hs_head.bias, hs_head.multiplier,
                               hs_head.shift, HS_NUM_CLASSES, hs_head.logit_zero_point, logits);
}}

void hs_explain_with(hs_context_t *context, int class_index, int16_t *trace)
{{
    if (class_index < 0 || class_index >= HS_NUM_CLASSES) {{
        memset(trace, 0, sizeof(int16_t) * HS_INPUT_LENGTH);
        return;
    }}
    hs_cam({source}, {channels}, {length}, {zero_point}, hs_head.weight + class_index * {channels},
           hs_head.trace_shift[class_index], context->coarse, HS_INPUT_LENGTH, trace);
}}

void hs_last_sums_with(const hs_context_t *context, int32_t *sums)
{{
    memcpy(sums, context->sums, sizeof(context->sums));
}}
""")
    if updates:
        parts.append(_set_head(backbone_sha256))
    return "".join(parts)


def _context_scratch(model: QuantizedModel, kernels: str) -> str:
    """The kernels' scratch as members of hs_context_t: the kernel-codebook convolutions' (CMSIS-NN needs none)."""
    if kernels == "cmsis-nn":
        return ""
    scratch, window = codebook_buffers(model)
    if not scratch:
        return ""
    return f"\n    int32_t codebook_scratch[{scratch}];\n    int16_t codebook_window[{window}];"


def _portable_layers(model: QuantizedModel, tensors: list[Tensor], offsets: dict[str, int]) -> str:
    """hs_infer_with's layers on HeartSight's kernels (hs_kernels.c), each writing the next tensor of the arena."""
    tensor_iter, lines = iter(tensors), []
    source, channels, length = "input", len(model.input_channels), model.window
    for i, conv in enumerate(model.convs):
        out = next(tensor_iter)
        lines.append(f"    {_conv_call(i, conv, source, channels, length, f'context->arena + {offsets[out.name]}')}\n")
        source, channels = f"context->arena + {offsets[out.name]}", conv.weight.shape[0]
        if pools_in_kernel(conv):
            length //= 2
        elif conv.pool_after:
            pooled = next(tensor_iter)
            lines.append(f"    hs_maxpool2({source}, {channels}, {length}, context->arena + {offsets[pooled.name]});\n")
            source, length = f"context->arena + {offsets[pooled.name]}", length // 2
    return "".join(lines)


def _cmsis_layers(model: QuantizedModel, tensors: list[Tensor], offsets: dict[str, int]) -> str:
    """hs_infer_with's layers on CMSIS-NN: input to channels-last, each conv on CMSIS-NN (a refusal returns -1) and
    its pooling, the last block back to channel-major. A tensor with padding rows is passed whole to the convolution
    that reads it, and written from its first data row."""
    start = {t.name: f"context->arena + {offsets[t.name]}" for t in tensors}
    data = {t.name: f"context->arena + {offsets[t.name] + t.pad[0] * t.channels}" for t in tensors}
    source, channels, length = "input_channels_last", len(model.input_channels), model.window
    lines = [f"    hs_transpose(input, {channels}, {length}, {data[source]});\n"]
    for i, conv in enumerate(model.convs):
        out_channels, _, kernel = conv.weight.shape
        lines.append(f"    if (hs_cmsis_conv1d_relu({start[source]}, {length}, {channels}, {conv.input_zero_point}, "
                     f"conv{i}_weight, conv{i}_bias, conv{i}_multiplier, conv{i}_shift, {out_channels}, {kernel}, "
                     f"{conv.output_zero_point}, {data[f'block{i}']}) != 0) {{\n"
                     "        return -1;  /* CMSIS-NN refused (hs_cmsis.h) */\n    }\n")
        source, channels = f"block{i}", out_channels
        if conv.pool_after:
            lines.append(f"    hs_maxpool2_channels_last({data[source]}, {length}, {channels}, "
                         f"{data[f'block{i}_pooled']});\n")
            source, length = f"block{i}_pooled", length // 2
    lines.append(f"    hs_transpose({data[source]}, {length}, {channels}, {data['last_channel_major']});\n")
    return "".join(lines)


def _conv_call(i: int, conv: QuantizedConv, source: str, channels: int, length: int, output: str) -> str:
    """The kernel call of convolution i, by its structure."""
    out_channels, _, kernel = conv.weight.shape
    head = f"{source}, {channels}, {length}, {conv.input_zero_point}"
    requantization = (f"conv{i}_bias, conv{i}_multiplier, conv{i}_shift, {out_channels}, {kernel}, "
                      f"{conv.output_zero_point}")
    structure = conv.structure
    pool = int(pools_in_kernel(conv))
    if conv.kind == "dense":
        return f"hs_conv1d_relu({head}, conv{i}_weight, {requantization}, {pool}, {output});"
    if conv.kind == "grouped":
        return (f"hs_conv1d_grouped_relu({head}, conv{i}_weight, conv{i}_inputs, {structure['groups']}, "
                f"{requantization}, {pool}, {output});")
    if conv.kind == "codebook":
        return (f"hs_conv1d_codebook_relu({head}, conv{i}_codebook, {len(structure['codebook'])}, conv{i}_index, "
                f"{codebook_bits(conv)}, {requantization}, {output}, context->codebook_scratch, context->codebook_window);")
    return (f"hs_conv1d_unified_relu({head}, conv{i}_magnitude, conv{i}_signs, "
            f"{int(structure['axis'] == 'taps')}, {structure['size']}, {requantization}, {output});")


def write_c_library(model: QuantizedModel, out_dir: str | Path, head_updates: bool, int8_sha256: str = "",
                    kernels: str = "portable") -> dict:
    """Write heartsight_model.h/.c and the runtime into out_dir; returns the static report (also report.json).
    int8_sha256 names the integer model in the header (firmware_export.artifact passes it); with head_updates the
    library has hs_set_head (firmware_export.head_update); kernels "cmsis-nn" runs the layers on CMSIS-NN."""
    import json

    check_kernels(model, kernels)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = static_report(model, head_updates, kernels)
    backbone = backbone_sha256(model)
    (out / "heartsight_model.h").write_text(_header(model, report, int8_sha256, backbone))
    (out / "heartsight_model.c").write_text(_source(model, head_updates, backbone, kernels))
    extra = CMSIS_FILES if kernels == "cmsis-nn" else ()
    for name in (*RUNTIME_FILES, *extra):
        shutil.copyfile(RUNTIME / name, out / name)
    write_cmake_lists(out, "heartsight_model", [name for name in (*C_FILES, *extra) if name.endswith(".c")],
                      cmsis_nn=kernels == "cmsis-nn")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


# What an export on CMSIS-NN adds to its CMakeLists.txt: the firmware's own CMSIS-NN and CMSIS-Core, by path.
CMSIS_NN_CMAKE = """
# The layers run on Arm's CMSIS-NN: point the build at your copy of it (its Include/ and Source/) and at CMSIS-Core's
# CMSIS/Core/Include (cmake -DCMSIS_NN_DIR=... -DCMSIS_CORE_DIR=...). Only its int8 support functions are compiled.
set(CMSIS_NN_DIR "" CACHE PATH "CMSIS-NN: the directory holding Include/ and Source/")
set(CMSIS_CORE_DIR "" CACHE PATH "CMSIS-Core: the directory holding CMSIS/Core/Include")
if(NOT CMSIS_NN_DIR OR NOT CMSIS_CORE_DIR)
  message(FATAL_ERROR "<target> runs on CMSIS-NN: configure with -DCMSIS_NN_DIR=path/to/CMSIS-NN "
                      "-DCMSIS_CORE_DIR=path/to/CMSIS-Core (or export with --kernels portable)")
endif()
file(GLOB HS_CMSIS_NN_SOURCES ${CMSIS_NN_DIR}/Source/NNSupportFunctions/*_s8*.c)
target_sources(<target> PRIVATE ${HS_CMSIS_NN_SOURCES})
target_include_directories(<target> PUBLIC ${CMSIS_NN_DIR}/Include ${CMSIS_CORE_DIR}/CMSIS/Core/Include)
"""


def write_cmake_lists(out_dir: Path, target: str, sources: list[str], notes: list[str] = (),
                      libraries: list[str] = (), cmsis_nn: bool = False) -> None:
    """CMakeLists.txt: the library as a CMake target, for firmware that adds the directory with add_subdirectory; and
    zephyr/module.yml with its zephyr/CMakeLists.txt, so that a Zephyr application lists the directory in
    ZEPHYR_EXTRA_MODULES and links it (not built here: no Zephyr SDK on the build machines). notes: comment lines
    for the firmware team (how to size the device path, when the export ships it); libraries: what the target links
    (the device path calls libm: m; Zephyr's C library has it already)."""
    linked = f"target_link_libraries({target} PUBLIC {' '.join(libraries)})\n" if libraries else ""
    comments = "".join(f"# {line.replace('<target>', target)}\n" for line in notes)
    zephyr = Path(out_dir) / "zephyr"
    zephyr.mkdir(exist_ok=True)
    (zephyr / "module.yml").write_text(f"name: {target}\nbuild:\n  cmake: zephyr\n")
    (zephyr / "CMakeLists.txt").write_text(f"""\
# Generated by `heartsight export`: the library as a Zephyr module (list its directory in ZEPHYR_EXTRA_MODULES).
{comments}zephyr_library_named({target})
zephyr_library_sources({" ".join(f"${{CMAKE_CURRENT_LIST_DIR}}/../{name}" for name in sources)})
zephyr_include_directories(${{CMAKE_CURRENT_LIST_DIR}}/..)
""")
    (Path(out_dir) / "CMakeLists.txt").write_text(f"""\
# Generated by `heartsight export`: add_subdirectory(this directory) and link {target}.
{comments}cmake_minimum_required(VERSION 3.13)
project({target} C)
add_library({target} STATIC {" ".join(sources)})
target_include_directories({target} PUBLIC ${{CMAKE_CURRENT_SOURCE_DIR}})
set_target_properties({target} PROPERTIES C_STANDARD 99 C_STANDARD_REQUIRED ON C_EXTENSIONS OFF)
{linked}{CMSIS_NN_CMAKE.replace("<target>", target) if cmsis_nn else ""}""")
