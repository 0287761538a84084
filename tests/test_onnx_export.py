"""ONNX export: the float graph matches torch, the int8 QDQ graph matches the integer reference under onnxruntime."""

import dataclasses
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from firmware_export.onnx_export import compare, export_float, export_int8_qdq
from firmware_export.quantize import quantize_model
from firmware_export.reference import infer, quantize_input
from models.architectures import GapCnn, fold_batch_norm
from models.quantization import calibrate, prepare_qat
from models.registry import ZooModel, get_spec, load_model
from sdk.data.preprocess import ECG_FS, beat_windows, ecg_tracks
from sdk.data.synthetic import synthetic_ecg
from sdk.errors import HeartSightError

WINDOW = 128


def toy_model(seed: int = 0) -> ZooModel:
    """A small GapCnn with non-trivial batch norms (random running statistics and affine parameters), in eval mode."""
    torch.manual_seed(seed)
    model = GapCnn(3, (8, 12), 7, 4)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.3, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    model.eval()
    spec = dataclasses.replace(get_spec("ecg_beat"), window=WINDOW, widths=(8, 12))
    return ZooModel(spec, model, {"name": "toy"}, None)


def random_windows(n: int, seed: int, length: int = WINDOW) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, length)).astype(np.float32)


@pytest.fixture(scope="module")
def toy():
    zoo = toy_model()
    return zoo, quantize_model(zoo, random_windows(512, seed=1))


def test_toy_float_matches_torch_and_int8_matches_the_integer_reference(toy, tmp_path):
    zoo, qm = toy
    report = compare(zoo, qm, random_windows(1000, seed=2), tmp_path)
    print(report)
    assert report["float"]["n"] == report["int8"]["n"] == 1000
    assert report["float"]["max_abs_logit_diff"] < 1e-4
    assert report["float"]["label_agreement_with_torch"] == 1.0
    assert report["int8"]["label_agreement_with_reference"] >= 0.95
    assert report["int8"]["max_abs_diff_logit_units"] <= 2
    assert report["int8"]["max_abs_diff_real"] <= 2 * qm.logit_scale * (1 + 1e-5)
    assert "QuantizeLinear" in report["int8"]["onnxruntime_ops"]
    for key in ("float", "int8"):
        onnx.checker.check_model(report[key]["path"], full_check=True)


def test_graphs_have_the_documented_interface_and_a_dynamic_batch(toy, tmp_path):
    zoo, qm = toy
    float_path = export_float(zoo, tmp_path / "float.onnx")
    int8_path = export_int8_qdq(zoo, qm, tmp_path / "sub" / "int8.onnx")
    x = random_windows(5, seed=3)
    with torch.no_grad():
        expected = zoo.model(torch.from_numpy(x)).numpy()
    reference, _ = infer(qm, quantize_input(qm, x))
    for path in (float_path, int8_path):
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version >= 17
        (inp,), (out,) = model.graph.input, model.graph.output
        assert inp.name == "input" and out.name == "logits"
        dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
        assert dims == ["batch", 3, WINDOW]
        assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 4]
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        one = session.run(["logits"], {"input": x[:1]})[0]
        five = session.run(["logits"], {"input": x})[0]
        assert one.shape == (1, 4) and five.shape == (5, 4)
        np.testing.assert_allclose(one, five[:1], atol=1e-6)
    float_logits = ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(float_logits, expected, atol=1e-4)
    assert np.all(float_logits.argmax(axis=1) == expected.argmax(axis=1))
    int8_logits = ort.InferenceSession(str(int8_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    steps = np.rint(int8_logits / np.float32(qm.logit_scale)) + qm.logit_zero_point
    assert np.abs(steps - reference).max() <= 2


def test_int8_graph_is_qdq_with_int8_weights_per_channel_and_int32_biases(toy, tmp_path):
    zoo, qm = toy
    model = onnx.load(str(export_int8_qdq(zoo, qm, tmp_path / "int8.onnx")))
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("Conv") == 2 and ops.count("MaxPool") == 1 and ops.count("Relu") == 2
    assert {"GlobalAveragePool", "Gemm"} <= set(ops)
    assert "BatchNormalization" not in ops
    # input, two block outputs, the pooled output, the logits
    assert ops.count("QuantizeLinear") == 5
    for i, layer in enumerate(qm.convs):
        weight, bias = initializers[f"conv{i}_weight_quantized"], initializers[f"conv{i}_bias_quantized"]
        assert weight.dtype == np.int8 and np.array_equal(weight, layer.weight)
        assert bias.dtype == np.int32 and np.array_equal(bias, layer.bias)
        np.testing.assert_allclose(initializers[f"conv{i}_weight_scale"], layer.weight_scale, rtol=1e-7)
        s_in = qm.input_scale if i == 0 else qm.convs[i - 1].output_scale
        np.testing.assert_allclose(initializers[f"conv{i}_bias_scale"],
                                   s_in * initializers[f"conv{i}_weight_scale"].astype(np.float64), rtol=1e-6)
    assert np.array_equal(initializers["head_weight_quantized"], qm.head_weight)
    assert np.array_equal(initializers["head_bias_quantized"], qm.head_bias)
    per_axis = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0].endswith("_quantized")]
    assert len(per_axis) == 6 and all(a.name == "axis" and a.i == 0 for n in per_axis for a in n.attribute)
    assert initializers["input_zero_point"] == qm.input_zero_point
    assert initializers["logits_zero_point"] == qm.logit_zero_point


def test_qat_model_exports_fake_quantized_weights_and_matches_the_reference(tmp_path):
    zoo = toy_model(seed=4)
    qat = prepare_qat(fold_batch_norm(zoo.model))
    calibrate(qat, [torch.from_numpy(random_windows(256, seed=5))])
    qat.eval()
    zoo = dataclasses.replace(zoo, model=qat, card={"name": "toy_qat"})
    qm = quantize_model(zoo, random_windows(256, seed=6))
    assert qm.source["quantization"] == "qat"
    report = compare(zoo, qm, random_windows(500, seed=7), tmp_path)
    print(report)
    assert report["float"]["torch_model"] == "zoo model without activation fake quantization"
    assert report["float"]["max_abs_logit_diff"] < 1e-4
    assert report["float"]["label_agreement_with_torch"] == 1.0
    assert report["int8"]["label_agreement_with_reference"] >= 0.95
    assert report["int8"]["max_abs_diff_logit_units"] <= 2
    exported = onnx.load(report["float"]["path"])
    weight = onnx.numpy_helper.to_array(next(t for t in exported.graph.initializer if t.name == "conv0_weight"))
    np.testing.assert_allclose(weight, qat.features[1].weight.detach().numpy())  # features[0] quantizes the input


def test_zoo_ecg_beat_on_synthetic_beats(tmp_path):
    start = time.perf_counter()
    zoo = load_model("ecg_beat")

    def windows(seed: int) -> np.ndarray:
        ecg = synthetic_ecg(duration_s=180, fs=ECG_FS, heart_rate=75, heart_rate_std=3.0,
                            ectopic={"S": 0.1, "V": 0.1}, seed=seed)
        tracks = ecg_tracks(ecg.signal, ecg.r_peaks)
        return beat_windows(tracks, np.arange(len(ecg.r_peaks)), zoo.spec.window)

    qm = quantize_model(zoo, windows(seed=0))
    report = compare(zoo, qm, windows(seed=1), tmp_path)
    print(report, f"{time.perf_counter() - start:.1f} s")
    assert report["float"]["n"] > 150
    assert report["float"]["max_abs_logit_diff"] < 1e-3  # logits of tens: float32 rounding in 5 blocks
    assert report["float"]["label_agreement_with_torch"] == 1.0
    assert report["int8"]["label_agreement_with_reference"] >= 0.95
    assert report["int8"]["max_abs_diff_logit_units"] <= 2


def test_errors_say_what_is_wrong_and_how_to_fix_it(toy, tmp_path, monkeypatch):
    zoo, qm = toy
    not_a_gapcnn = dataclasses.replace(zoo, model=nn.Sequential(nn.Conv1d(3, 4, 7)))
    with pytest.raises(HeartSightError, match="GapCnn"):
        export_float(not_a_gapcnn, tmp_path / "x.onnx")
    with pytest.raises(HeartSightError, match=r"shape \(N, 3, 128\)"):
        compare(zoo, qm, random_windows(4, seed=0, length=64), tmp_path)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(HeartSightError, match="pip install onnxruntime"):
        compare(zoo, qm, random_windows(4, seed=0), tmp_path)
