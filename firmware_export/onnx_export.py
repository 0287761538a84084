"""ONNX export for onnxruntime: the float model and the int8 QDQ model, and their check against torch and the reference.

Both graphs are written with `onnx.helper` from the batch-norm-folded GapCnn rather than with `torch.onnx.export`:
in torch >= 2.9 that exporter needs `onnxscript` (the dynamo path) or falls back to the deprecated TorchScript
exporter, while the GapCnn is six kinds of node. The graphs are checked numerically instead (`compare`).

- float: input (N, C, L) float32 -> [Conv (pads k//2) -> Relu -> MaxPool(2)?]* -> GlobalAveragePool -> Flatten -> Gemm
  -> logits (N, classes).
- int8 QDQ: the same graph with QuantizeLinear/DequantizeLinear at every point the integer reference
  (firmware_export.reference, the specification) rounds: the input, int8 weights per output channel (axis 0),
  int32 biases at s_in * s_w, each block's output (after Relu), and the logits. The mean over time and the head
  stay in float between the last block's DequantizeLinear and the logits' QuantizeLinear, as the reference keeps
  the time sums exact. The output `logits` is the dequantized int8 logits: int8 = round(logits / s) + z exactly.

onnxruntime is not bit-exact with the reference, and is not expected to be: the reference requantizes as TensorFlow
Lite does, a rounding high multiply then a rounding right shift (double rounding: a value less than 2**-(shift + 1)
below a half rounds up), while onnxruntime rounds the exact product to nearest, ties to even (both in the
QLinearConv it fuses DequantizeLinear-Conv-Relu-QuantizeLinear into and in the unfused float path). Its
QuantizeLinear of the input also divides by the scale and rounds ties to even, where the reference multiplies by
1 / scale and rounds them away from zero. A one-step difference in an early block spreads through the later
ones; `compare` measures how far it goes on the logits.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from firmware_export.quantize import QuantizedModel, gapcnn_blocks
from models.architectures import GapCnn, fold_batch_norm
from models.quantization import ActivationFakeQuant, is_quantized
from models.registry import ZooModel
from sdk.errors import HeartSightError

OPSET = 17
INPUT, OUTPUT = "input", "logits"
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

    def constant(self, name: str, values: np.ndarray) -> str:
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(values), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def quantize_dequantize(self, x: str, name: str, scale: float, zero_point: int) -> str:
        """x -> QuantizeLinear -> DequantizeLinear at a per-tensor int8 (scale, zero point)."""
        s = self.constant(f"{name}_scale", np.array(scale, np.float32))
        z = self.constant(f"{name}_zero_point", np.array(zero_point, np.int8))
        q = self.node("QuantizeLinear", [x, s, z], f"{name}_q")
        return self.node("DequantizeLinear", [q, s, z], f"{name}_dq")

    def dequantized_constant(self, name: str, values: np.ndarray, scales: np.ndarray) -> str:
        """An integer initializer (int8 weights, int32 biases) and its per-axis (axis 0) DequantizeLinear."""
        values = np.ascontiguousarray(values)
        q = self.constant(f"{name}_quantized", values)
        s = self.constant(f"{name}_scale", np.asarray(scales, np.float32).reshape(-1))
        z = self.constant(f"{name}_zero_point", np.zeros(values.shape[0], values.dtype))
        return self.node("DequantizeLinear", [q, s, z], name, axis=0)

    def model(self, zoo: ZooModel, channels: int, classes: int, opset: int, description: str):
        helper, TensorProto = self.helper, self.onnx.TensorProto
        graph = helper.make_graph(
            self.nodes, f"heartsight_{zoo.spec.name}",
            [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [BATCH_AXIS, channels, zoo.spec.window])],
            [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [BATCH_AXIS, classes])],
            self.initializers,
        )
        opsets = [helper.make_opsetid("", opset)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="heartsight",
                                  ir_version=helper.find_min_ir_version_for(opsets), doc_string=description)
        card = zoo.card or {}
        helper.set_model_props(model, {
            "model": str(card.get("name", zoo.spec.name)), "version": str(card.get("version", "")),
            "fs": str(zoo.spec.fs), "window": str(zoo.spec.window),
            "input_channels": ",".join(zoo.spec.input_channels), "outputs": ",".join(zoo.spec.outputs),
            "weights": description,
        })
        self.onnx.checker.check_model(model, full_check=True)
        return model


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
    model = g.model(zoo, blocks[0][0].in_channels, head.out_features, opset,
                    f"HeartSight {zoo.spec.name}: batch-norm-folded float model ({weights})")
    return _save(onnx, model, path)


def export_int8_qdq(zoo: ZooModel, qm: QuantizedModel, path: str | Path, opset: int = OPSET) -> Path:
    """Write the int8 model (firmware_export.quantize.QuantizedModel) as an ONNX QDQ graph for onnxruntime;
    the zoo model it was made from names it and supplies its card."""
    onnx = _require("onnx", "onnx")
    _check_opset(opset)
    g = _Graph(onnx)
    x = g.quantize_dequantize(INPUT, "input", qm.input_scale, qm.input_zero_point)
    s_in = float(qm.input_scale)
    for i, layer in enumerate(qm.convs):
        kernel = layer.weight.shape[2]
        pad = kernel // 2
        w = g.dequantized_constant(f"conv{i}_weight", layer.weight.astype(np.int8), layer.weight_scale)
        b = g.dequantized_constant(f"conv{i}_bias", layer.bias.astype(np.int32), s_in * layer.weight_scale)
        x = g.node("Conv", [x, w, b], f"conv{i}", kernel_shape=[kernel], pads=[pad, pad], strides=[1],
                   dilations=[1], group=1)
        x = g.quantize_dequantize(g.node("Relu", [x], f"relu{i}"), f"block{i}", layer.output_scale,
                                  layer.output_zero_point)
        if layer.pool_after:  # max-pooling keeps the block's quantization: requantizing at it is exact
            x = g.quantize_dequantize(g.node("MaxPool", [x], f"pool{i}", kernel_shape=[2], strides=[2]),
                                      f"pool{i}", layer.output_scale, layer.output_zero_point)
        s_in = float(layer.output_scale)
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x], "mean_over_time")], "features", axis=1)
    w = g.dequantized_constant("head_weight", qm.head_weight.astype(np.int8), qm.head_weight_scale)
    b = g.dequantized_constant("head_bias", qm.head_bias.astype(np.int32), s_in * np.asarray(qm.head_weight_scale))
    x = g.node("Gemm", [x, w, b], "head", transB=1)
    scale = g.constant("logits_scale", np.array(qm.logit_scale, np.float32))
    zero_point = g.constant("logits_zero_point", np.array(qm.logit_zero_point, np.int8))
    g.node("DequantizeLinear", [g.node("QuantizeLinear", [x, scale, zero_point], "logits_q"), scale, zero_point], OUTPUT)
    origin = qm.source.get("quantization", "") if isinstance(qm.source, dict) else ""
    model = g.model(zoo, qm.convs[0].weight.shape[1], len(qm.classes), opset,
                    f"HeartSight {zoo.spec.name}: int8 QDQ model ({origin or 'int8'}); output = dequantized int8 logits")
    return _save(onnx, model, path)


# ------------------------------------------------------------------------------------------------------ compare


def _session(path: Path, threads: int, optimized: Path | None = None):
    ort = _require("onnxruntime", "onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: serializing the optimized graph warns that it is machine-specific
    if optimized is not None:  # the graph onnxruntime actually runs, after its QDQ fusions
        options.optimized_model_filepath = str(optimized)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise HeartSightError(f"onnxruntime could not load {path}: {str(error).splitlines()[0]}; "
                              "upgrade onnxruntime (`pip install -U onnxruntime`) or export with a lower opset") from None


def _run(session, x: np.ndarray, batch: int = 256) -> np.ndarray:
    return np.concatenate([session.run([OUTPUT], {INPUT: x[i: i + batch]})[0] for i in range(0, len(x), batch)])


def _op_types(path: Path) -> list[str]:
    onnx = _require("onnx", "onnx")
    if not path.exists():
        return []
    return sorted({node.op_type for node in onnx.load(str(path)).graph.node})


def _torch_float(zoo: ZooModel) -> nn.Module:
    """The torch function the float ONNX exports: the zoo model, minus activation fake quantization for QAT."""
    model = copy.deepcopy(zoo.model).eval()
    if is_quantized(model):
        model.features = nn.Sequential(*[nn.Identity() if isinstance(m, ActivationFakeQuant) else m
                                         for m in model.features])
    return model


def compare(zoo: ZooModel, qm: QuantizedModel, x_float: np.ndarray, work_dir: str | Path, threads: int = 1) -> dict:
    """Export both models into work_dir, run them with onnxruntime (CPU) on x_float (N, C, L), and measure:

    float: against the torch model (the unfolded zoo model, so batch-norm folding is checked too);
    int8: against the integer reference (firmware_export.reference), in int8 logit steps and in real units.
    """
    from firmware_export.reference import dequantize_logits, infer, quantize_input

    x = np.asarray(x_float, np.float32)
    channels = len(zoo.spec.input_channels)
    if x.ndim != 3 or x.shape[1:] != (channels, zoo.spec.window) or len(x) == 0:
        raise HeartSightError(f"compare needs windows of shape (N, {channels}, {zoo.spec.window}) with N >= 1, "
                              f"got {x.shape}; build them with sdk.data.preprocess.{zoo.spec.preprocessing}")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    name = str((zoo.card or {}).get("name", zoo.spec.name))
    float_path = export_float(zoo, work_dir / f"{name}_float.onnx")
    int8_path = export_int8_qdq(zoo, qm, work_dir / f"{name}_int8_qdq.onnx")

    with torch.no_grad():
        torch_logits = torch.cat([_torch_float(zoo)(torch.from_numpy(x[i: i + 256])) for i in range(0, len(x), 256)]).numpy()
    float_logits = _run(_session(float_path, threads), x)

    optimized = work_dir / f"{name}_int8_qdq.ort_optimized.onnx"
    int8_real = _run(_session(int8_path, threads, optimized), x)
    int8_onnx = np.clip(np.rint(int8_real / np.float32(qm.logit_scale)) + qm.logit_zero_point, -128, 127).astype(np.int64)
    reference, _ = infer(qm, quantize_input(qm, x))
    reference_real = dequantize_logits(qm, reference)
    torch_labels = torch_logits.argmax(axis=1)
    return {
        "float": {
            "n": len(x),
            "label_agreement_with_torch": float(np.mean(float_logits.argmax(axis=1) == torch_labels)),
            "max_abs_logit_diff": float(np.abs(float_logits - torch_logits).max()),
            "max_abs_logit": float(np.abs(torch_logits).max()),
            "torch_model": "zoo model without activation fake quantization" if is_quantized(zoo.model) else "zoo model",
            "path": str(float_path),
        },
        "int8": {
            "n": len(x),
            "label_agreement_with_reference": float(np.mean(int8_onnx.argmax(axis=1) == reference.argmax(axis=1))),
            "max_abs_diff_logit_units": int(np.abs(int8_onnx - reference.astype(np.int64)).max()),
            "fraction_logits_differing": float(np.mean(int8_onnx != reference)),
            "max_abs_diff_real": float(np.abs(int8_real.astype(np.float64) - reference_real).max()),
            "label_agreement_with_torch": float(np.mean(int8_onnx.argmax(axis=1) == torch_labels)),
            "onnxruntime_ops": _op_types(optimized),
            "path": str(int8_path),
        },
    }


def int8_session(zoo: ZooModel, qm: QuantizedModel, work_dir: str | Path, threads: int = 2):
    """A function running the int8 QDQ model with onnxruntime: float windows (N, C, L) -> real-valued outputs."""
    path = export_int8_qdq(zoo, qm, Path(work_dir) / "model_int8_qdq.onnx")
    session = _session(path, threads)
    return lambda x: _run(session, np.asarray(x, np.float32))


def export_onnx(model: str | Path, out_dir: str | Path, data_root=None, calibration: str = "minmax",
                test_windows: int = 256) -> dict:
    """`heartsight export --target onnx`: the float and int8 QDQ models in out_dir, with their agreement
    (with torch, and with the integer reference) on held-out windows, also written to out_dir/report.json."""
    import json

    from firmware_export import CALIBRATION_WINDOWS, real_windows
    from firmware_export.quantize import quantize_model
    from models.registry import load_model

    zoo = load_model(model)
    qm = quantize_model(zoo, real_windows(zoo.spec, "calibration", data_root, CALIBRATION_WINDOWS), calibration)
    report = compare(zoo, qm, real_windows(zoo.spec, "test", data_root, test_windows), out_dir, threads=2)
    report["model"] = zoo.card.get("name", zoo.spec.name)
    report["calibration"] = calibration
    (Path(out_dir) / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
