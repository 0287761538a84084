"""ONNX export for onnxruntime: the float model, and the int8 model as an exact integer graph.

Both graphs are written with `onnx.helper` rather than with `torch.onnx.export`: in torch >= 2.9 that exporter
needs `onnxscript` (the dynamo path) or falls back to the deprecated TorchScript exporter, while the GapCnn is six
kinds of node.

- float: input (N, C, L) float32 -> [Conv (pads k//2) -> Relu -> MaxPool(2)?]* -> GlobalAveragePool -> Flatten -> Gemm
  -> logits (N, classes). Checked against torch (`compare`).
- int8: the integer reference (firmware_export.reference, the specification the C library matches bit for bit)
  written as an ONNX graph: input (N, C, L) float32 -> `logits` (N, classes) int8 and `trace` (N, L) int16, the
  class activation map of the arg-max class, exactly as hs_infer and hs_explain compute them.

Why not QDQ or QOperator (QLinearConv) graphs, which onnxruntime documents for int8? Their results depend on the
CPU. On x86-64 with AVX2 but without VNNI, onnxruntime's u8s8 kernels (VPMADDUBSW) saturate the int16 sums of
pairs of products, which onnxruntime's own documentation warns about; its remedies, 7-bit weights
(`reduce_range`) or s8s8, change the weights the C library runs or move the problem between kernels. And on every
CPU QLinearConv requantizes with a float multiplier rounded half to even, not with the TensorFlow Lite fixed-point
multiplier and double rounding the firmware uses, so logits differ by a step or more and labels now and then.
A user whose server lacks VNNI would get other alerts from the same model.

The graph here does the firmware's arithmetic with operators whose results do not depend on the CPU:
- each convolution is a float32 Conv of integers (int8 weights, input minus its zero point): every product and
  every partial sum is an integer below 2**24 in magnitude, so float32 holds it exactly in any summation order
  (with or without FMA, on any SIMD width). `_exact_channel_groups` proves the bound from the weights at export
  time and splits a convolution's input channels into groups summed in int64 when one Conv could exceed it;
- bias, requantization (SaturatingRoundingDoublingHighMul, RoundingDivideByPOT), clamps, the head and the class
  activation map are int64 elementwise operators. Rounding happens only where the ONNX specification defines it
  exactly: power-of-two divisions are BitShifts of unsigned magnitudes (both roundings are symmetric about zero),
  and the one other division, of the explanation's upsampling, is (x - Mod(x, d)) / d, so Div divides exactly and
  its rounding mode never matters.
The result equals the integer reference bit for bit (tested on every export), on any CPU onnxruntime runs on.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from firmware_export.quantize import QuantizedConv, QuantizedModel, gapcnn_blocks
from firmware_export.reference import INT8_MAX, INT8_MIN, INT16_MAX
from models.architectures import GapCnn, fold_batch_norm
from models.quantization import ActivationFakeQuant, is_quantized
from models.registry import ZooModel
from sdk.errors import HeartSightError

OPSET = 17
INPUT, OUTPUT = "input", "logits"  # OUTPUT: the float graph's
BATCH_AXIS = "batch"


def _require(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise HeartSightError(f"{package} is not installed ({error}); install it with `pip install {package}`") from None


# --------------------------------------------------------------------------------------------------- float layers


def _layers(zoo: ZooModel) -> tuple[list[tuple[nn.Conv1d, bool]], nn.Linear]:
    """The folded model's (convolution, max-pool after it) blocks and its head, after checking it is a GapCnn.

    For a QAT model `conv.weight` is the fake-quantized weight (its parametrization), i.e. int8 * scale.
    """
    model = getattr(zoo, "model", None)
    if not isinstance(model, GapCnn):
        raise HeartSightError(f"ONNX export covers the zoo's GapCnn models, not {type(model).__name__}; "
                              "load one with models.registry.load_model")
    # a copy in eval mode; a QAT model is already folded (nothing changes)
    return gapcnn_blocks(fold_batch_norm(model), zoo.spec.name)


def _conv_parameters(conv: nn.Conv1d) -> tuple[torch.Tensor, torch.Tensor]:
    weight = conv.weight.detach()
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype)
    return weight, bias


# ----------------------------------------------------------------------------------------------- graph building


class _Graph:
    def __init__(self, onnx_module):
        self.onnx = onnx_module
        self.helper = onnx_module.helper
        self.nodes: list = []
        self.initializers: list = []
        self.names: set[str] = set()

    def constant(self, name: str, values: np.ndarray) -> str:
        self.names.add(name)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(values), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def model(self, name: str, channels: int, window: int, outputs: list, opset: int, description: str):
        helper, TensorProto = self.helper, self.onnx.TensorProto
        graph = helper.make_graph(
            self.nodes, f"heartsight_{name}",
            [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [BATCH_AXIS, channels, window])],
            outputs, self.initializers,
        )
        opsets = [helper.make_opsetid("", opset)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="heartsight",
                                  ir_version=helper.find_min_ir_version_for(opsets), doc_string=description)
        self.onnx.checker.check_model(model, full_check=True)
        return model


def _properties(card: dict, fs: float, window: int, channels, outputs) -> dict:
    """Metadata every exported graph carries: which model, its sampling rate, window, channels and outputs."""
    return {"model": str(card.get("name") or card.get("model", "")), "version": str(card.get("version", "")),
            "sha256": str(card.get("sha256", "")), "fs": str(fs), "window": str(window),
            "input_channels": ",".join(channels), "outputs": ",".join(outputs)}


def _check_opset(opset: int) -> None:
    if opset < 13:
        raise HeartSightError(f"opset {opset} is too old: per-axis DequantizeLinear needs opset 13 or later (use {OPSET})")


def _save(onnx_module, model, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx_module.save(model, str(path))
    return path


# ------------------------------------------------------------------------------------------------------ exports


def export_float(zoo: ZooModel, path: str | Path, opset: int = OPSET) -> Path:
    """Write the batch-norm-folded float model as ONNX (input `input` (N, C, L), output `logits`, dynamic N).

    A QAT model is exported with its fake-quantized weights materialized (int8 * per-channel scale, the weights the
    int8 model uses) and without its activation fake quantization: the graph is the QAT network in float arithmetic.
    A model without QAT is exported with its float weights (batch norm folded into the convolutions).
    """
    onnx = _require("onnx", "onnx")
    _check_opset(opset)
    blocks, head = _layers(zoo)
    g = _Graph(onnx)
    x = INPUT
    for i, (conv, pool) in enumerate(blocks):
        weight, bias = _conv_parameters(conv)
        pad = conv.kernel_size[0] // 2
        x = g.node("Conv", [x, g.constant(f"conv{i}_weight", weight.float().numpy()),
                            g.constant(f"conv{i}_bias", bias.float().numpy())], f"conv{i}",
                   kernel_shape=[conv.kernel_size[0]], pads=[pad, pad], strides=[1], dilations=[1], group=1)
        x = g.node("Relu", [x], f"relu{i}")
        if pool:
            x = g.node("MaxPool", [x], f"pool{i}", kernel_shape=[2], strides=[2])
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x], "mean_over_time")], "features", axis=1)
    g.node("Gemm", [x, g.constant("head_weight", head.weight.detach().float().numpy()),
                    g.constant("head_bias", head.bias.detach().float().numpy())], OUTPUT, transB=1)
    weights = "fake-quantized (QAT) weights, no activation quantization" if is_quantized(zoo.model) else "float weights"
    outputs = [g.helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, [BATCH_AXIS, head.out_features])]
    model = g.model(zoo.spec.name, blocks[0][0].in_channels, zoo.spec.input_length, outputs, opset,
                    f"HeartSight {zoo.spec.name}: batch-norm-folded float model ({weights})")
    card = zoo.card or {}
    onnx.helper.set_model_props(model, {**_properties({"name": card.get("name", zoo.spec.name), **card}, zoo.spec.fs,
                                                      zoo.spec.input_length, zoo.spec.input_channels, zoo.spec.outputs),
                                        "weights": weights})
    return _save(onnx, model, path)


INT8_OUTPUTS = ("logits", "trace")
FLOAT32_EXACT = 2 ** 24  # every integer of smaller magnitude is a float32


def _exact_channel_groups(layer: QuantizedConv) -> list[tuple[int, int]]:
    """Input-channel ranges [a, b) whose float32 convolution is exact: for every output channel, the sum of
    |weight| * largest |input - zero point| over the range stays below 2**24, so no partial sum can round."""
    largest_input = max(abs(INT8_MIN - layer.input_zero_point), abs(INT8_MAX - layer.input_zero_point))
    per_channel = np.abs(layer.weight.astype(np.int64)).sum(axis=2) * largest_input  # (out, in)
    groups, start, total = [], 0, np.zeros(per_channel.shape[0], np.int64)
    for c in range(per_channel.shape[1]):
        if (per_channel[:, c] >= FLOAT32_EXACT).any():
            raise HeartSightError(f"one input channel of a convolution can reach {per_channel[:, c].max():,}, beyond "
                                  "float32's exact integers; the integer ONNX graph cannot represent this model")
        if ((total + per_channel[:, c]) >= FLOAT32_EXACT).any():
            groups.append((start, c))
            start, total = c, np.zeros_like(total)
        total += per_channel[:, c]
    return groups + [(start, per_channel.shape[1])]


class _IntegerGraph(_Graph):
    """Integer arithmetic of the reference as ONNX operators on int64 tensors."""

    def int64(self, name: str, values) -> str:
        return self.constant(name, np.asarray(values, np.int64))

    def zero(self) -> str:
        """The int64 scalar 0, one initializer shared by every comparison with it."""
        if "zero" not in self.names:
            self.int64("zero", 0)
        return "zero"

    def cast(self, x: str, to: int, name: str) -> str:
        return self.node("Cast", [x], name, to=to)

    def floor_divide(self, x: str, divisor: str, name: str) -> str:
        """floor(x / d) for d > 0: Mod (fmod=0) gives the divisor-signed remainder, so Div divides exactly."""
        exact = self.node("Sub", [x, self.node("Mod", [x, divisor], f"{name}_remainder")], f"{name}_exact")
        return self.node("Div", [exact, divisor], name)

    def shift_right(self, x: str, bits: str, name: str) -> str:
        """floor(x / 2**bits) of x >= 0: BitShift, exactly defined on unsigned integers."""
        unsigned = self.cast(x, self.onnx.TensorProto.UINT64, f"{name}_unsigned")
        return self.cast(self.node("BitShift", [unsigned, bits], f"{name}_shifted", direction="RIGHT"),
                         self.onnx.TensorProto.INT64, name)

    def round_magnitude(self, magnitude: str, power: np.ndarray | str, name: str) -> str:
        """|x| / 2**e rounded half up, from |x|: RoundingDivideByPOT's ties away from zero, once the sign is put
        back. `power` holds e (an array of them per channel, or the name of a tensor of them)."""
        if isinstance(power, np.ndarray):
            half = self.int64(f"{name}_half", np.where(power > 0, 1 << np.maximum(power - 1, 0), 0))
            bits = self.constant(f"{name}_bits", power.astype(np.uint64))
        else:
            half, bits = power + "_half", power + "_bits"
        return self.shift_right(self.node("Add", [magnitude, half], f"{name}_rounded"), bits, name)

    def requantize(self, acc: str, multiplier: np.ndarray, shift: np.ndarray, shape: tuple[int, ...], name: str) -> str:
        """MultiplyByQuantizedMultiplier per channel: saturating left shift, the rounding doubling high multiply
        (truncated toward zero, as C divides), the rounding right shift. Both roundings are symmetric about zero
        (the multiplier is positive), so they are done on |product| and the sign is put back once."""
        shift = np.asarray(shift, np.int64).reshape(shape)
        left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
        shifted = self.node("Mul", [acc, self.int64(f"{name}_left", 1 << left)], f"{name}_shifted")
        shifted = self.node("Clip", [shifted, self.int64(f"{name}_int32_min", -(1 << 31)),
                                     self.int64(f"{name}_int32_max", (1 << 31) - 1)], f"{name}_saturated")
        product = self.node("Mul", [shifted, self.int64(f"{name}_multiplier", np.asarray(multiplier).reshape(shape))],
                            f"{name}_product")
        negative = self.node("Less", [product, self.zero()], f"{name}_is_negative")
        # high = trunc((p + nudge) / 2**31), nudge = 2**30 (p >= 0) or 1 - 2**30: |high| = (|p| + 2**30 - [p < 0]) >> 31
        nudged = self.node("Sub", [self.node("Add", [self.node("Abs", [product], f"{name}_magnitude"),
                                                     self.int64(f"{name}_2_30", 1 << 30)], f"{name}_nudged_up"),
                                   self.cast(negative, self.onnx.TensorProto.INT64, f"{name}_negative")], f"{name}_nudged")
        high = self.shift_right(nudged, self.constant(f"{name}_31", np.array(31, np.uint64)), f"{name}_high")
        magnitude = self.round_magnitude(high, right, f"{name}_magnitude_out")
        return self.node("Mul", [magnitude, self.node("Sign", [product], f"{name}_sign")], name)  # 0 when p is

    def clamp_to_int8(self, x: str, low: int, name: str) -> str:
        clipped = self.node("Clip", [x, self.int64(f"{name}_low", low), self.int64(f"{name}_high", INT8_MAX)],
                            f"{name}_clipped")
        return self.cast(clipped, self.onnx.TensorProto.INT8, name)


def _quantize_input(g: _IntegerGraph, qm: QuantizedModel) -> str:
    """hs_quantize_input: float32 x * (1 / scale), NaN -> 0, clamp to +-256, round half away from zero, + zero point."""
    TensorProto = g.onnx.TensorProto
    floats = lambda name, value: g.constant(name, np.array(value, np.float32))  # noqa: E731
    x = g.node("Where", [g.node("IsNaN", [INPUT], "input_is_nan"), floats("input_nan_value", 0.0), INPUT],
               "input_not_nan")
    v = g.node("Mul", [x, floats("input_inverse_scale", np.float32(1.0 / qm.input_scale))], "input_scaled")
    v = g.node("Clip", [v, floats("input_min", -256.0), floats("input_max", 256.0)], "input_bounded")
    positive = g.node("GreaterOrEqual", [v, floats("input_zero", 0.0)], "input_positive")
    whole = g.node("Where", [positive, g.node("Floor", [v], "input_floor"), g.node("Ceil", [v], "input_ceil")],
                   "input_whole")
    fraction = g.node("Sub", [v, whole], "input_fraction")  # exact in float32
    up = g.cast(g.node("GreaterOrEqual", [fraction, floats("input_half", 0.5)], "input_is_up"), TensorProto.INT64,
                "input_up")
    down = g.cast(g.node("LessOrEqual", [fraction, floats("input_minus_half", -0.5)], "input_is_down"),
                  TensorProto.INT64, "input_down")
    rounded = g.node("Sub", [g.node("Add", [g.cast(whole, TensorProto.INT64, "input_whole_int"), up], "input_rounded_up"),
                             down], "input_rounded")
    shifted = g.node("Add", [rounded, g.int64("input_zero_point", qm.input_zero_point)], "input_shifted")
    return g.clamp_to_int8(shifted, INT8_MIN, "input_q")


def _conv_block(g: _IntegerGraph, x: str, layer: QuantizedConv, i: int) -> str:
    """reference.conv_block: int8 (N, C, L) -> int8 (N, O, L'), float32 Conv of integers where exact."""
    TensorProto = g.onnx.TensorProto
    out_channels, _, kernel = layer.weight.shape
    centred = g.node("Sub", [g.cast(x, TensorProto.FLOAT, f"conv{i}_input"),
                             g.constant(f"conv{i}_input_zero_point", np.array(layer.input_zero_point, np.float32))],
                     f"conv{i}_centred")
    parts = []
    for a, b in _exact_channel_groups(layer):
        name = f"conv{i}" if (a, b) == (0, layer.weight.shape[1]) else f"conv{i}_channels{a}_{b}"
        source = centred if name == f"conv{i}" else g.node(
            "Slice", [centred, g.int64(f"{name}_start", [a]), g.int64(f"{name}_end", [b]), g.int64(f"{name}_axis", [1])],
            f"{name}_input")
        weight = g.cast(g.constant(f"{name}_weight_int8", np.ascontiguousarray(layer.weight[:, a:b])), TensorProto.FLOAT,
                        f"{name}_weight")
        conv = g.node("Conv", [source, weight], f"{name}_float", kernel_shape=[kernel], pads=[kernel // 2] * 2,
                      strides=[1], dilations=[1], group=1)
        parts.append(g.cast(conv, TensorProto.INT64, f"{name}_sum"))
    acc = parts[0]
    for k, part in enumerate(parts[1:]):  # exact in int64
        acc = g.node("Add", [acc, part], f"conv{i}_partial_sum{k}")
    acc = g.node("Add", [acc, g.int64(f"conv{i}_bias", layer.bias.reshape(1, -1, 1))], f"conv{i}_acc")
    scaled = g.requantize(acc, layer.multiplier, layer.shift, (1, out_channels, 1), f"conv{i}_requantize")
    out = g.node("Add", [scaled, g.int64(f"block{i}_zero_point", layer.output_zero_point)], f"block{i}_shifted")
    out = g.clamp_to_int8(out, max(INT8_MIN, layer.output_zero_point), f"block{i}")  # the fused ReLU
    if layer.pool_after:
        out = g.node("MaxPool", [out], f"block{i}_pooled", kernel_shape=[2], strides=[2])
    return out


def export_int8(qm: QuantizedModel, path: str | Path, opset: int = OPSET, int8_sha256: str = "",
                explained_class: int | None = None) -> Path:
    """Write the int8 model as the exact integer graph (see the module's docstring); input `input` (N, C, L) float32,
    outputs `logits` (N, classes) int8 and `trace` (N, L) int16, with a dynamic N. The trace is of explained_class
    (ModelSpec.explained_class), or by default of each window's arg-max class."""
    onnx = _require("onnx", "onnx")
    _check_opset(opset)
    TensorProto = onnx.TensorProto
    g = _IntegerGraph(onnx)
    x = _quantize_input(g, qm)
    for i, layer in enumerate(qm.convs):
        x = _conv_block(g, x, layer, i)
    centred = g.node("Sub", [g.cast(x, TensorProto.INT64, "last_int64"), g.int64("last_zero_point", qm.last.output_zero_point)],
                     "last_centred")  # (N, K, T)
    sums = g.node("ReduceSum", [centred, g.int64("time_axis", [2])], "channel_sums", keepdims=0)  # (N, K)
    head = g.int64("head_weight", qm.head_weight)  # (classes, K)
    acc = g.node("ReduceSum", [g.node("Mul", [g.node("Unsqueeze", [sums, g.int64("class_axis", [1])], "sums_per_class"), head],
                                      "head_products"), g.int64("channel_axis", [2])], "head_dot", keepdims=0)
    acc = g.node("Add", [acc, g.int64("head_bias_times_length", qm.last_length * qm.head_bias.astype(np.int64)[None])],
                 "head_acc")
    logits = g.requantize(acc, qm.head_multiplier, qm.head_shift, (1, len(qm.classes)), "head_requantize")
    logits = g.clamp_to_int8(g.node("Add", [logits, g.int64("logits_zero_point", qm.logit_zero_point)], "logits_shifted"),
                             INT8_MIN, INT8_OUTPUTS[0])
    # hs_explain of the arg-max class (the first on ties, as hs_infer returns it), or of the one class explained
    predicted = g.node("ArgMax", [g.cast(logits, TensorProto.INT32, "logits_int32")], "predicted", axis=1, keepdims=0)
    if explained_class is not None:  # (N,) copies of it
        predicted = g.node("Add", [g.node("Mul", [predicted, g.zero()], "no_class"),
                                   g.int64("explained_class", explained_class)], "explained")
    class_weight = g.node("Gather", [head, predicted], "class_weight", axis=0)  # (N, K)
    cam = g.node("ReduceSum", [g.node("Mul", [g.node("Unsqueeze", [class_weight, g.int64("time_axis_new", [2])],
                                                     "class_weight_column"), centred], "cam_products"),
                               g.int64("cam_channel_axis", [1])], "cam", keepdims=0)  # (N, T)
    cam = g.node("Max", [cam, g.zero()], "cam_relu")
    shifts = qm.trace_shift.astype(np.int64)  # per class; gathered for each window's predicted class
    g.node("Unsqueeze", [g.node("Gather", [g.int64("trace_shift_half_table", np.where(shifts > 0, 1 << np.maximum(shifts - 1, 0), 0)),
                                           predicted], "class_trace_half", axis=0), g.int64("trace_axis", [1])],
           "trace_shift_half")
    g.node("Unsqueeze", [g.node("Gather", [g.constant("trace_shift_bits_table", shifts.astype(np.uint64)), predicted],
                                "class_trace_bits", axis=0), g.int64("trace_axis2", [1])], "trace_shift_bits")
    coarse = g.node("Min", [g.round_magnitude(cam, "trace_shift", "cam_shifted"), g.int64("int16_max", INT16_MAX)],
                    "coarse")
    length, t = qm.window, qm.last_length  # linear upsampling in integers, as reference.explain
    denominator = 2 * length
    numerator = np.maximum((2 * np.arange(length) + 1) * t - length, 0)
    left, fraction = numerator // denominator, numerator % denominator
    right = np.minimum(left + 1, t - 1)
    weighted = g.node("Add", [
        g.node("Mul", [g.node("Gather", [coarse, g.int64("upsample_left", left)], "coarse_left", axis=1),
                       g.int64("upsample_left_weight", denominator - fraction)], "weighted_left"),
        g.node("Mul", [g.node("Gather", [coarse, g.int64("upsample_right", right)], "coarse_right", axis=1),
                       g.int64("upsample_right_weight", fraction)], "weighted_right")], "weighted")
    weighted = g.node("Add", [weighted, g.int64("upsample_half", denominator // 2)], "weighted_rounded")
    trace = g.floor_divide(weighted, g.int64("upsample_denominator", denominator), "trace_int64")
    g.cast(trace, TensorProto.INT16, INT8_OUTPUTS[1])
    helper = onnx.helper
    outputs = [helper.make_tensor_value_info(INT8_OUTPUTS[0], TensorProto.INT8, [BATCH_AXIS, len(qm.classes)]),
               helper.make_tensor_value_info(INT8_OUTPUTS[1], TensorProto.INT16, [BATCH_AXIS, qm.window])]
    origin = qm.source.get("quantization", "int8")
    model = g.model(qm.name, len(qm.input_channels), qm.window, outputs, opset,
                    f"HeartSight {qm.name}: int8 ({origin}) as an exact integer graph; logits real = "
                    f"(q - {qm.logit_zero_point}) * {qm.logit_scale!r}; trace real = q * trace_scale[class]")
    onnx.helper.set_model_props(model, {
        **_properties(qm.source, qm.fs, qm.window, qm.input_channels, qm.classes),
        "logit_scale": repr(float(qm.logit_scale)), "logit_zero_point": str(qm.logit_zero_point),
        "trace_scale": ",".join(repr(qm.trace_scale(c)) for c in range(len(qm.classes))),
        "int8_sha256": int8_sha256,
    })
    return _save(onnx, model, path)


# ------------------------------------------------------------------------------------------------------ running


def _session(path: Path, threads: int = 1):
    ort = _require("onnxruntime", "onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise HeartSightError(f"onnxruntime could not load {path}: {str(error).splitlines()[0]}; "
                              "upgrade onnxruntime (`pip install -U onnxruntime`) or export with a lower opset") from None


class Int8Session:
    """The int8 ONNX model under onnxruntime: float windows (N, C, L) -> (int8 logits, int16 traces of the top class)."""

    def __init__(self, path: str | Path, threads: int = 1, batch: int = 256):
        self.path, self.batch = Path(path), batch
        self.session = _session(self.path, threads)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, np.float32)
        parts = [self.session.run(list(INT8_OUTPUTS), {INPUT: x[i: i + self.batch]}) for i in range(0, len(x), self.batch)]
        if not parts:
            raise HeartSightError("no windows to run")
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _torch_float(zoo: ZooModel) -> nn.Module:
    """The torch function the float ONNX exports: the zoo model, minus activation fake quantization for QAT."""
    model = copy.deepcopy(zoo.model).eval()
    if is_quantized(model):
        model.features = nn.Sequential(*[nn.Identity() if isinstance(m, ActivationFakeQuant) else m
                                         for m in model.features])
    return model


def compare(zoo: ZooModel, qm: QuantizedModel, x_float: np.ndarray, float_path: Path | None, int8_path: Path,
            threads: int = 1) -> dict:
    """Run the exported models with onnxruntime (CPU) on x_float (N, C, L) and measure:

    float (when float_path is given): against the torch model (unfolded, so batch-norm folding is checked too);
    int8: against the integer reference, logits and traces (they must be identical).
    """
    from firmware_export.reference import explain, infer, quantize_input

    x = np.asarray(x_float, np.float32)
    channels = len(zoo.spec.input_channels)
    if x.ndim != 3 or x.shape[1:] != (channels, zoo.spec.input_length) or len(x) == 0:
        raise HeartSightError(f"compare needs windows of shape (N, {channels}, {zoo.spec.input_length}) with N >= 1, "
                              f"got {x.shape}; build them with sdk.data.preprocess.{zoo.spec.preprocessing}")
    with torch.no_grad():
        torch_logits = torch.cat([_torch_float(zoo)(torch.from_numpy(x[i: i + 256])) for i in range(0, len(x), 256)]).numpy()
    logits, traces = Int8Session(int8_path, threads)(x)
    reference, last = infer(qm, quantize_input(qm, x))
    reference_traces = explain(qm, last, zoo.spec.explained(reference))
    torch_labels = torch_logits.argmax(axis=1)
    report = {"int8": {
        "n": len(x),
        "logits_identical_to_reference": int(np.all(logits == reference, axis=1).sum()),
        "traces_identical_to_reference": int(np.all(traces == reference_traces, axis=1).sum()),
        "label_agreement_with_torch": float(np.mean(logits.argmax(axis=1) == torch_labels)),
    }}
    if float_path is not None:
        session = _session(float_path, threads)
        float_logits = np.concatenate([session.run([OUTPUT], {INPUT: x[i: i + 256]})[0] for i in range(0, len(x), 256)])
        report["float"] = {
            "n": len(x),
            "label_agreement_with_torch": float(np.mean(float_logits.argmax(axis=1) == torch_labels)),
            "max_abs_logit_diff": float(np.abs(float_logits - torch_logits).max()),
            "max_abs_logit": float(np.abs(torch_logits).max()),
            "torch_model": "zoo model without activation fake quantization" if is_quantized(zoo.model) else "zoo model",
        }
    return report
