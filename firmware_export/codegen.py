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

from firmware_export.quantize import QuantizedModel

RUNTIME = Path(__file__).resolve().parent / "runtime"
KERNEL_FILES = ("hs_kernels.h", "hs_kernels.c")
# Measured with arm-none-eabi-gcc 12.2 -O2 -mcpu=cortex-m4 -mthumb: the kernels (~1.5 KB) and the generated
# hs_infer/hs_explain/hs_quantize_input (~0.5-0.7 KB); `verify-firmware --qemu` reports the exact image sizes.
CODE_BYTES_ESTIMATE = 2304
# The deepest call, measured with -fstack-usage: hs_infer (64 B) -> hs_conv1d_relu (376 B, most of it the
# 64-sample int32 accumulator of one block) -> hs_requantize (8 B).
STACK_BYTES_ESTIMATE = 448


@dataclass(frozen=True)
class Tensor:
    name: str
    channels: int
    length: int
    produced: int  # index of the layer that writes it
    last_read: int  # index of the last layer that reads it (a past-the-end index keeps it live for hs_explain)

    @property
    def size(self) -> int:
        return self.channels * self.length


def activation_tensors(model: QuantizedModel) -> list[Tensor]:
    """The arena's tensors in layer order: each conv output, then its pooled copy when the block pools."""
    tensors, layer, length = [], 0, model.window
    for i, conv in enumerate(model.convs):
        channels = conv.weight.shape[0]
        tensors.append(Tensor(f"block{i}", channels, length, layer, layer + 1))
        layer += 1
        if conv.pool_after:
            length //= 2
            tensors.append(Tensor(f"block{i}_pooled", channels, length, layer, layer + 1))
            layer += 1
    last = tensors[-1]
    tensors[-1] = Tensor(last.name, last.channels, last.length, last.produced, layer + 1)  # read by sums and hs_explain
    return tensors


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


def static_report(model: QuantizedModel) -> dict:
    tensors = activation_tensors(model)
    _, arena, peak = arena_layout(tensors)
    out_channels = sum(c.weight.shape[0] for c in model.convs) + len(model.classes)
    weights = model.weight_bytes()
    bias = 4 * out_channels
    requantization = 8 * out_channels + 4 * len(model.classes)  # multiplier + shift per channel, trace shifts
    scratch = 4 * model.last.weight.shape[0] + 2 * model.last_length  # channel sums, coarse CAM
    flash = weights + bias + requantization + CODE_BYTES_ESTIMATE
    ram = arena + scratch + STACK_BYTES_ESTIMATE
    return {
        "model": model.source.get("model", model.name), "sha256": model.source.get("sha256", ""),
        "quantization": model.source.get("quantization", ""),
        "flash_bytes": flash,
        "flash": {"weights": weights, "bias": bias, "requantization": requantization, "code_estimate": CODE_BYTES_ESTIMATE},
        "ram_bytes": ram,
        "ram": {"arena": arena, "scratch": scratch, "stack_estimate": STACK_BYTES_ESTIMATE},
        "macs": model.macs(),
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
        f"ram {report['ram_bytes']:,} bytes: arena {r['arena']:,}, scratch {r['scratch']:,}, stack ~{r['stack_estimate']:,}",
        f"  lower bound (largest pair of live activations): {report['lower_bounds']['ram_largest_live_pair']:,}",
        f"compute {report['macs']:,} MACs per inference",
    ])


def _array(c_type: str, name: str, values: np.ndarray) -> str:
    flat = np.asarray(values).reshape(-1)
    body = ",\n".join("    " + ", ".join(str(int(v)) for v in flat[i: i + 16]) for i in range(0, len(flat), 16))
    return f"static const {c_type} {name}[{len(flat)}] = {{\n{body}\n}};\n"


def _float_literal(value: float) -> str:
    return f"{float(np.float32(value)):.9g}f".replace("inff", "INFINITY")


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _header(model: QuantizedModel, report: dict, int8_sha256: str) -> str:
    classes = len(model.classes)
    return f"""/* HeartSight model {model.source.get('model', model.name)} {model.source.get('version', '')}: generated by
 * `heartsight export`; do not edit. Quantization: {model.source.get('quantization', '')}.
 * flash ~{report['flash_bytes']} bytes, RAM ~{report['ram_bytes']} bytes, {report['macs']} MACs per inference. */
#ifndef HEARTSIGHT_MODEL_H
#define HEARTSIGHT_MODEL_H

#include <stdint.h>

#define HS_MODEL_NAME {_c_string(model.source.get('model', model.name))}
#define HS_MODEL_VERSION {_c_string(model.source.get('version', ''))}
#define HS_MODEL_SHA256 {_c_string(model.source.get('sha256', ''))}
/* sha256 of the integer model (quantized_model.json) this library implements: what alerts report. */
#define HS_INT8_SHA256 {_c_string(int8_sha256)}
#define HS_FS_HZ {_float_literal(model.fs)}
#define HS_INPUT_CHANNELS {len(model.input_channels)}
#define HS_INPUT_LENGTH {model.window}
#define HS_NUM_CLASSES {classes}
#define HS_INPUT_SCALE {_float_literal(model.input_scale)}
#define HS_INPUT_ZERO_POINT {model.input_zero_point}
#define HS_LOGIT_SCALE {_float_literal(model.logit_scale)}
#define HS_LOGIT_ZERO_POINT {model.logit_zero_point}
#define HS_ARENA_BYTES {report['ram']['arena']}

/* Class names in output order, and the real value of one step of each class's explanation trace. */
extern const char *const hs_class_names[HS_NUM_CLASSES];
extern const float hs_trace_scale[HS_NUM_CLASSES];

/* x: [HS_INPUT_CHANNELS][HS_INPUT_LENGTH] preprocessed floats -> q: int8 (the only function using float). */
void hs_quantize_input(const float *x, int8_t *q);
/* Runs the model; logits: [HS_NUM_CLASSES] int8 (real = (q - HS_LOGIT_ZERO_POINT) * HS_LOGIT_SCALE).
 * Returns the arg-max class. */
int hs_infer(const int8_t *input, int8_t *logits);
/* The saliency trace of class_index for the input of the last hs_infer: [HS_INPUT_LENGTH] int16 >= 0
 * (real = value * hs_trace_scale[class_index]). An out-of-range class gives an all-zero trace. */
void hs_explain(int class_index, int16_t *trace);

#endif
"""


def _source(model: QuantizedModel) -> str:
    tensors = activation_tensors(model)
    offsets, _, _ = arena_layout(tensors)
    parts = ['/* Generated by `heartsight export`; do not edit. */\n#include <string.h>\n#include "heartsight_model.h"\n'
             '#include "hs_kernels.h"\n\n']
    for i, conv in enumerate(model.convs):
        parts += [_array("int8_t", f"conv{i}_weight", conv.weight), _array("int32_t", f"conv{i}_bias", conv.bias),
                  _array("int32_t", f"conv{i}_multiplier", conv.multiplier), _array("int32_t", f"conv{i}_shift", conv.shift)]
    parts += [_array("int8_t", "head_weight", model.head_weight), _array("int32_t", "head_bias", model.head_bias),
              _array("int32_t", "head_multiplier", model.head_multiplier), _array("int32_t", "head_shift", model.head_shift),
              _array("int32_t", "trace_shift", model.trace_shift)]
    names = ", ".join(_c_string(c) for c in model.classes)
    scales = ", ".join(_float_literal(model.trace_scale(c)) for c in range(len(model.classes)))
    last = tensors[-1]
    parts.append(f"""
const char *const hs_class_names[HS_NUM_CLASSES] = {{{names}}};
const float hs_trace_scale[HS_NUM_CLASSES] = {{{scales}}};

static int8_t hs_arena[HS_ARENA_BYTES];
static int32_t hs_sums[{last.channels}];
static int16_t hs_coarse[{last.length}];

void hs_quantize_input(const float *x, int8_t *q)
{{
    int i;
    for (i = 0; i < HS_INPUT_CHANNELS * HS_INPUT_LENGTH; i++) {{
        float v = x[i] * {_float_literal(1.0 / model.input_scale)};
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

int hs_infer(const int8_t *input, int8_t *logits)
{{
""")
    source, channels, length = "input", len(model.input_channels), model.window
    tensor_iter = iter(tensors)
    for i, conv in enumerate(model.convs):
        out = next(tensor_iter)
        out_channels, _, kernel = conv.weight.shape
        parts.append(f"    hs_conv1d_relu({source}, {channels}, {length}, {conv.input_zero_point}, conv{i}_weight, conv{i}_bias, "
                     f"conv{i}_multiplier, conv{i}_shift, {out_channels}, {kernel}, {conv.output_zero_point}, "
                     f"hs_arena + {offsets[out.name]});\n")
        source, channels = f"hs_arena + {offsets[out.name]}", out_channels
        if conv.pool_after:
            pooled = next(tensor_iter)
            parts.append(f"    hs_maxpool2({source}, {channels}, {length}, hs_arena + {offsets[pooled.name]});\n")
            source, length = f"hs_arena + {offsets[pooled.name]}", length // 2
    zero_point = model.last.output_zero_point
    parts.append(f"""    hs_channel_sums({source}, {channels}, {length}, {zero_point}, hs_sums);
    return hs_linear_from_sums(hs_sums, {channels}, {length}, head_weight, head_bias, head_multiplier, head_shift,
                               HS_NUM_CLASSES, HS_LOGIT_ZERO_POINT, logits);
}}

void hs_explain(int class_index, int16_t *trace)
{{
    if (class_index < 0 || class_index >= HS_NUM_CLASSES) {{
        memset(trace, 0, sizeof(int16_t) * HS_INPUT_LENGTH);
        return;
    }}
    hs_cam({source}, {channels}, {length}, {zero_point}, head_weight + class_index * {channels},
           trace_shift[class_index], hs_coarse, HS_INPUT_LENGTH, trace);
}}
""")
    return "".join(parts)


def write_c_library(model: QuantizedModel, out_dir: str | Path, int8_sha256: str = "") -> dict:
    """Write heartsight_model.h/.c and the kernels into out_dir; returns the static report (also report.json).
    int8_sha256 names the integer model in the header (firmware_export.artifact passes it)."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = static_report(model)
    (out / "heartsight_model.h").write_text(_header(model, report, int8_sha256))
    (out / "heartsight_model.c").write_text(_source(model))
    for name in KERNEL_FILES:
        shutil.copyfile(RUNTIME / name, out / name)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
