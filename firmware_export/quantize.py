"""int8 quantization of a zoo model into the integer form every backend (reference, C, ONNX) runs.

Scheme (TensorFlow Lite's int8): batch norm folded; weights symmetric per output channel in [-127, 127];
activations asymmetric per tensor; biases int32 at scale s_in * s_w; each output channel requantized by an
int32 fixed-point multiplier and a shift; ReLU fused as the clamp at the output's zero point.

The head works on the *sum* over time of the last block's int8 activations (int32, no rounding), so the
linear layer and the class activation map are exact integer functions of the same tensor:
logit_c ~ s_last * s_w[c] / T * (sum_k w[c,k] * S_k + T * b[c]), CAM_c(t) = sum_k w[c,k] * (a[k,t] - z).

Activation ranges come from the QAT model's trained ranges when it has them, else from calibration on
training windows (min/max, or a percentile to ignore outliers). Logit ranges always come from calibration.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.architectures import fold_batch_norm, gapcnn_macs
from models.quantization import (
    WEIGHT_MAX,
    ActivationFakeQuant,
    activation_qparams,
    activation_quantizers,
    is_quantized,
    weight_scales,
)
from models.registry import ZooModel
from models.structured import integer_weight
from sdk.errors import HeartSightError

CALIBRATIONS = ("minmax", "percentile")
PERCENTILE = 99.99
TRACE_BITS = 15  # explainer traces are int16, non-negative


def quantize_multiplier(real: float) -> tuple[int, int]:
    """(q, shift) with real = q * 2**(shift - 31) and q in [2**30, 2**31): TFLite's QuantizeMultiplier."""
    if real <= 0:
        return 0, 0
    fraction, shift = math.frexp(real)
    q = int(round(fraction * (1 << 31)))
    if q == 1 << 31:
        q, shift = q // 2, shift + 1
    if shift < -31:
        return 0, 0
    return q, shift


@dataclass
class QuantizedConv:
    weight: np.ndarray  # int8 (out, in, kernel)
    bias: np.ndarray  # int32 (out,), at scale input_scale * weight_scale
    multiplier: np.ndarray  # int32 (out,)
    shift: np.ndarray  # int32 (out,)
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    pool_after: bool  # max-pool by 2 after the block
    weight_scale: np.ndarray  # float (out,): weight = int8 * weight_scale, per output channel
    # How the C library stores and computes the weight (None: dense int8). `weight` is always the dense int8 weight,
    # the specification: {"kind": "codebook", "codebook": [[int6]] (codes, kernel), "index": [[int]] (out, in)};
    # {"kind": "unify", "axis": "channels"|"taps", "size": N}; {"kind": "grouped", "groups": G, "input_order": [int]}
    # (output channels in group order, each group reading its in/G inputs in input_order's order).
    structure: dict | None = None

    @property
    def kind(self) -> str:
        """The kernel that runs it: dense, grouped, codebook or unify."""
        return self.structure["kind"] if self.structure is not None else "dense"


@dataclass
class QuantizedModel:
    name: str
    fs: float
    window: int  # samples along an input (ModelSpec.input_length)
    input_channels: tuple[str, ...]
    classes: tuple[str, ...]
    input_scale: float
    input_zero_point: int
    convs: list[QuantizedConv]
    head_weight: np.ndarray  # int8 (classes, last width)
    head_bias: np.ndarray  # int32 (classes,), at scale last_scale * head_weight_scale
    head_multiplier: np.ndarray  # int32 (classes,): acc -> logits, includes the 1/T of the average
    head_shift: np.ndarray
    head_weight_scale: np.ndarray  # float (classes,)
    logit_scale: float
    logit_zero_point: int
    trace_shift: np.ndarray  # int32 (classes,): CAM >> shift fits int16
    source: dict = field(default_factory=dict)  # model card fields: name, version, sha256, quantization origin

    @property
    def last_length(self) -> int:
        return self.window // (2 ** sum(c.pool_after for c in self.convs))

    @property
    def last(self) -> QuantizedConv:
        return self.convs[-1]

    def trace_scale(self, class_index: int) -> float:
        """Real units (the float CAM's) of one trace step for a class."""
        return self.last.output_scale * float(self.head_weight_scale[class_index]) * 2.0 ** int(self.trace_shift[class_index])

    def macs(self) -> int:
        """Multiplies of one inference as the C kernels do them (a structured kernel adds more than it multiplies)."""
        return gapcnn_macs([(multiplies_per_sample(c), c.pool_after) for c in self.convs], self.head_weight.size,
                           self.window)


def multiplies_per_sample(conv: QuantizedConv) -> int:
    """Multiplies per output sample: every weight (dense; grouped layers store only their groups' weights), every
    codeword tap on every input channel (codebook), or one per live block (unify)."""
    out, inputs, kernel = conv.weight.shape
    if conv.kind == "grouped":
        return conv.weight.size // conv.structure["groups"]
    if conv.kind == "codebook":
        return inputs * len(conv.structure["codebook"]) * kernel
    if conv.kind == "unify":
        return int(np.count_nonzero(conv.weight)) // conv.structure["size"]
    return conv.weight.size


def gapcnn_blocks(folded: nn.Module, name: str) -> tuple[list[tuple[nn.Conv1d, bool]], nn.Linear]:
    """A batch-norm-folded GapCnn's (convolution, max-pool after it) blocks and its head, checked to be what the
    integer kernels and the ONNX export implement: 'same' stride-1 convolutions, ReLU, MaxPool1d(2)."""
    blocks: list[list] = []
    for module in folded.features:
        if isinstance(module, nn.Conv1d):
            if module.stride != (1,) or module.dilation != (1,) or module.groups != 1 \
                    or module.padding != (module.kernel_size[0] // 2,) or module.padding_mode != "zeros":
                raise HeartSightError(f"unsupported convolution {module} in {name}: the export expects "
                                      "stride 1, no dilation or groups and 'same' zero padding k//2 (a GapCnn)")
            blocks.append([module, False, False])  # conv, has ReLU, pool after
        elif isinstance(module, nn.ReLU) and blocks and not blocks[-1][1]:
            blocks[-1][1] = True
        elif isinstance(module, nn.MaxPool1d) and blocks and blocks[-1][1] and not blocks[-1][2]:
            if module.kernel_size not in (2, (2,)) or module.stride not in (2, (2,)) or module.padding not in (0, (0,)) \
                    or module.dilation not in (1, (1,)) or module.ceil_mode:
                raise HeartSightError(f"unsupported pooling {module} in {name}: the export expects MaxPool1d(2)")
            blocks[-1][2] = True
        elif not isinstance(module, (nn.Identity, ActivationFakeQuant)):
            raise HeartSightError(f"unexpected layer {type(module).__name__} in {name}.features; the export "
                                  "expects Conv1d-BatchNorm-ReLU blocks with MaxPool1d(2) between them (a GapCnn)")
    if not blocks or not all(relu for _, relu, _ in blocks):
        raise HeartSightError(f"{name} is not a GapCnn of Conv1d-BatchNorm-ReLU blocks; "
                              "build it with models.registry.ModelSpec.build")
    return [(conv, pool) for conv, _, pool in blocks], folded.head


@torch.no_grad()
def _observed_ranges(model: nn.Module, x: np.ndarray, calibration: str) -> list[tuple[float, float]]:
    """(low, high) of the input, each block's output (after ReLU) and the logits, over the calibration windows."""
    values: list[list[np.ndarray]] = []
    for i in range(0, len(x), 512):
        batch = torch.from_numpy(x[i: i + 512])
        seen = [batch]
        h = batch
        for module in model.features:
            h = module(h)
            if isinstance(module, nn.ReLU):
                seen.append(h)
        seen.append(model.head(h.mean(dim=-1)))
        if not values:
            values = [[] for _ in seen]
        for store, tensor in zip(values, seen):
            store.append(tensor.flatten().numpy() if calibration == "percentile" else
                         np.array([tensor.min().item(), tensor.max().item()]))
    ranges = []
    for store in values:
        joined = np.concatenate(store)
        if calibration == "percentile":
            ranges.append((float(np.percentile(joined, 100 - PERCENTILE)), float(np.percentile(joined, PERCENTILE))))
        else:
            ranges.append((float(joined.min()), float(joined.max())))
    return ranges


def quantize_model(zoo: ZooModel, calibration_x: np.ndarray, calibration: str = "minmax",
                   calibration_source: str = "") -> QuantizedModel:
    """The integer model of a zoo (or compressed, or QAT) model; calibration_x are training windows (N, C, L),
    which calibration_source describes for the model's record of how it was made."""
    if calibration not in CALIBRATIONS:
        raise HeartSightError(f"unknown calibration {calibration!r}; choose minmax or percentile")
    if len(calibration_x) == 0:
        raise HeartSightError("calibration needs at least one training window")
    qat = is_quantized(zoo.model)
    model = zoo.model if qat else fold_batch_norm(zoo.model)
    model.eval()
    ranges = _observed_ranges(model, calibration_x.astype(np.float32), calibration)
    if qat:  # the ranges the model was trained with, for the input and every block
        trained = [(float(q.low), float(q.high)) for q in activation_quantizers(model)]
        ranges = trained + ranges[len(trained):]
    blocks, head = gapcnn_blocks(model, zoo.spec.name)
    activation = [activation_qparams(*r) for r in ranges]  # input, blocks..., logits
    convs = []
    for i, (conv, pool_after) in enumerate(blocks):
        w_q, w_scale, structure = integer_weight(conv)
        s_in, z_in = activation[i]
        s_out, z_out = activation[i + 1]
        bias = conv.bias.detach().double().numpy() if conv.bias is not None else np.zeros(len(w_q))
        b_q = np.round(bias / (s_in * w_scale)).astype(np.int64)
        pairs = [quantize_multiplier(s_in * float(ws) / s_out) for ws in w_scale]
        convs.append(QuantizedConv(w_q, _int32(b_q), np.array([p[0] for p in pairs], np.int32),
                                   np.array([p[1] for p in pairs], np.int32), z_in, s_out, z_out, pool_after,
                                   w_scale, structure))
    head_weight = head.weight.detach().double().numpy()
    convs, head_weight = _grouped_channel_order(convs, head_weight)
    head_fields = quantize_head(head_weight, head.bias.detach().double().numpy(),
                                activation[len(convs)][0], zoo.spec.input_length // (2 ** sum(p for _, p in blocks)),
                                ranges[-1])
    return QuantizedModel(
        name=zoo.card.get("name", zoo.spec.name), fs=zoo.spec.fs, window=zoo.spec.input_length,
        input_channels=zoo.spec.input_channels, classes=zoo.spec.outputs,
        input_scale=activation[0][0], input_zero_point=activation[0][1], convs=convs, **head_fields,
        source={"model": zoo.card.get("name", zoo.spec.name), "architecture": zoo.spec.name,
                "version": zoo.card.get("version", ""),
                "sha256": zoo.card.get("sha256", ""), "quantization": "qat" if qat else f"post-training ({calibration})",
                "calibration": {"method": calibration, "windows": int(len(calibration_x)), "source": calibration_source,
                                "ranges": "input and blocks from quantization-aware training, logits calibrated" if qat
                                else "input, blocks and logits calibrated"}},
    )


def _grouped_channel_order(convs: list[QuantizedConv], head_weight: np.ndarray):
    """Fold each grouped layer's output permutation into the channel order (its rows, and the next layer's or the
    head's columns), and give it the table of its inputs in group order: the form hs_conv1d_grouped_relu runs.
    Takes the structures of integer_weight ({"kind": "grouped", "out_group", "in_group"})."""
    convs = list(convs)
    for i, conv in enumerate(convs):
        if conv.kind != "grouped":
            continue
        order = np.argsort(conv.structure["out_group"], kind="stable")
        convs[i] = replace(conv, weight=conv.weight[order], bias=conv.bias[order], multiplier=conv.multiplier[order],
                           shift=conv.shift[order], weight_scale=conv.weight_scale[order],
                           structure={**conv.structure, "out_group": conv.structure["out_group"][order]})
        if i + 1 < len(convs):
            following = convs[i + 1]
            structure = following.structure
            if following.kind == "grouped":
                structure = {**structure, "in_group": structure["in_group"][order]}
            convs[i + 1] = replace(following, weight=following.weight[:, order], structure=structure)
        else:
            head_weight = head_weight[:, order]
    for i, conv in enumerate(convs):
        if conv.kind == "grouped":
            in_group, out_group = conv.structure["in_group"], conv.structure["out_group"]
            outside = out_group[:, None] != in_group[None, :]
            if np.any(conv.weight[outside] != 0):
                raise AssertionError(f"conv {i}: a weight outside its group mask is not zero")
            convs[i] = replace(conv, structure={
                "kind": "grouped", "groups": int(out_group.max()) + 1,
                "input_order": np.argsort(in_group, kind="stable").tolist()})
    return convs, head_weight


HEAD_FIELDS = ("head_weight", "head_bias", "head_multiplier", "head_shift", "head_weight_scale", "logit_scale",
               "logit_zero_point", "trace_shift")


def quantize_head(weight: np.ndarray, bias: np.ndarray, last_scale: float, last_length: int,
                  logit_range: tuple[float, float]) -> dict:
    """The QuantizedModel fields (HEAD_FIELDS) of a float linear head on the last block's pooled activations:
    at export, and again for every head refitted on the same backbone (firmware_export.head_update)."""
    w = torch.from_numpy(np.asarray(weight, np.float64))
    w_scale = weight_scales(w).double()
    w_q = torch.clamp(torch.round(w / w_scale[:, None]), -WEIGHT_MAX, WEIGHT_MAX).to(torch.int8).numpy()
    b_q = np.round(np.asarray(bias, np.float64) / (last_scale * w_scale.numpy())).astype(np.int64)
    s_logit, z_logit = activation_qparams(*logit_range)
    pairs = [quantize_multiplier(last_scale * float(ws) / (last_length * s_logit)) for ws in w_scale]
    # the largest CAM value a class can reach: every activation at its maximum, 255 steps above the zero point
    cam_max = (np.maximum(w_q.astype(np.int64), 0).sum(axis=1) * 255).clip(min=1)
    trace_shift = np.maximum(0, np.ceil(np.log2(cam_max + 1)).astype(np.int64) - TRACE_BITS).astype(np.int32)
    return {"head_weight": w_q, "head_bias": _int32(b_q), "head_multiplier": np.array([p[0] for p in pairs], np.int32),
            "head_shift": np.array([p[1] for p in pairs], np.int32), "head_weight_scale": w_scale.numpy(),
            "logit_scale": s_logit, "logit_zero_point": z_logit, "trace_shift": trace_shift}


def _int32(values: np.ndarray) -> np.ndarray:
    if np.abs(values).max(initial=0) >= 2 ** 31:
        raise HeartSightError("a bias does not fit int32 at its scale; the calibration range is degenerate (check the data)")
    return values.astype(np.int32)


QUANTIZED_FILE = "quantized_model.json"


def save_quantized(model: QuantizedModel, directory: str | Path) -> Path:
    """The integer model as JSON next to the generated code, so verification needs neither torch nor the zoo."""
    def plain(value):
        return value.tolist() if isinstance(value, np.ndarray) else value
    record = {k: plain(v) for k, v in asdict(model).items() if k != "convs"}
    record["convs"] = [{k: plain(v) for k, v in asdict(c).items() if k != "structure" or v is not None}
                       for c in model.convs]  # a dense layer's record is as before structures existed
    path = Path(directory) / QUANTIZED_FILE
    path.write_text(json.dumps(record) + "\n")
    return path


def load_quantized(directory: str | Path) -> QuantizedModel:
    path = Path(directory) / QUANTIZED_FILE
    if not path.exists():
        raise HeartSightError(f"{directory} holds no {QUANTIZED_FILE}; export the model with "
                              "`heartsight export --model NAME --out DIR` first")
    record = json.loads(path.read_text())
    if any("weight_scale" not in c for c in record["convs"]):
        raise HeartSightError(f"{path} was written by an older HeartSight (no conv weight scales); export the model "
                              "again with `heartsight export --model NAME --out DIR`")
    types = {"weight": np.int8, "bias": np.int32, "multiplier": np.int32, "shift": np.int32, "weight_scale": np.float64}
    convs = [QuantizedConv(**{k: np.array(v, types[k]) if k in types else v for k, v in c.items()}) for c in record.pop("convs")]
    arrays = {"head_weight": np.int8, "head_bias": np.int32, "head_multiplier": np.int32, "head_shift": np.int32,
              "head_weight_scale": np.float64, "trace_shift": np.int32}
    fields = {k: np.array(v, arrays[k]) if k in arrays else v for k, v in record.items()}
    fields["input_channels"], fields["classes"] = tuple(fields["input_channels"]), tuple(fields["classes"])
    return QuantizedModel(convs=convs, **fields)
