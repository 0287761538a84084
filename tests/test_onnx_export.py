"""ONNX export: the float graph matches torch; the int8 graph computes the integer reference bit for bit, on any CPU."""

import dataclasses
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from firmware_export.onnx_export import FLOAT32_EXACT, Int8Session, _exact_channel_groups, compare, export_float, export_int8
from firmware_export.quantize import quantize_model
from firmware_export.reference import explain, infer, quantize_input
from models.architectures import GapCnn, fold_batch_norm
from models.quantization import calibrate, prepare_qat
from models.registry import ZooModel, get_spec, load_model
from sdk.data.preprocess import ECG_FS, beat_windows, ecg_tracks
from sdk.data.synthetic import synthetic_ecg
from sdk.errors import HeartSightError

WINDOW = 128
CHANNELS = len(get_spec("ecg_beat").input_channels)


def toy_model(seed: int = 0, widths=(8, 12)) -> ZooModel:
    """A small GapCnn with non-trivial batch norms (random running statistics and affine parameters), in eval mode."""
    torch.manual_seed(seed)
    model = GapCnn(CHANNELS, widths, 7, 4)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.3, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    model.eval()
    spec = dataclasses.replace(get_spec("ecg_beat"), window=WINDOW, widths=widths)
    return ZooModel(spec, model, {"name": "toy"}, None)


def random_windows(n: int, seed: int, length: int = WINDOW) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, CHANNELS, length)).astype(np.float32)


@pytest.fixture(scope="module")
def toy():
    zoo = toy_model()
    return zoo, quantize_model(zoo, random_windows(512, seed=1))


def exported(zoo, qm, directory):
    return export_float(zoo, directory / "float.onnx"), export_int8(qm, directory / "int8.onnx")


def test_float_matches_torch_and_int8_is_the_integer_reference_bit_for_bit(toy, tmp_path):
    zoo, qm = toy
    x = random_windows(1000, seed=2) * np.float32(3.0)  # beyond the calibrated range: the clamps matter too
    report = compare(zoo, qm, x, *exported(zoo, qm, tmp_path))
    assert report["float"]["n"] == report["int8"]["n"] == 1000
    assert report["float"]["max_abs_logit_diff"] < 1e-4
    assert report["float"]["label_agreement_with_torch"] == 1.0
    assert report["int8"]["logits_identical_to_reference"] == 1000
    assert report["int8"]["traces_identical_to_reference"] == 1000


def test_int8_input_quantization_matches_the_firmware_on_awkward_values(toy, tmp_path):
    """NaN, infinities, huge values and exact half steps are rounded as hs_quantize_input rounds them."""
    zoo, qm = toy
    x = random_windows(4, seed=3)
    step = np.float32(qm.input_scale)
    x[0, 0, :8] = [np.nan, np.inf, -np.inf, 1e30, -1e30, 0.5 * step, -0.5 * step, 2.5 * step]
    x[1] = 0.0
    logits, traces = Int8Session(export_int8(qm, tmp_path / "int8.onnx"))(x)
    reference, last = infer(qm, quantize_input(qm, x))
    assert np.array_equal(logits, reference)
    assert np.array_equal(traces, explain(qm, last, reference.argmax(axis=1)))


def test_a_graph_that_explains_one_class_traces_it_for_every_window_as_the_c_library_does(toy, tmp_path):
    """Rhythm models explain AF whatever the label (ModelSpec.explained_class): the graph, the integer reference
    and the C library's hs_explain(class) give the same trace."""
    from firmware_export.codegen import write_c_library
    from firmware_export.host import CModel, build_shared_library

    zoo, qm = toy
    x = random_windows(64, seed=5)
    logits, traces = Int8Session(export_int8(qm, tmp_path / "int8.onnx", explained_class=2))(x)
    reference, last = infer(qm, quantize_input(qm, x))
    assert (reference.argmax(axis=1) != 2).any()  # the class explained is not always the top one
    assert np.array_equal(logits, reference)
    assert np.array_equal(traces, explain(qm, last, np.full(len(x), 2)))
    write_c_library(qm, tmp_path, head_updates=True)
    library = CModel(build_shared_library(tmp_path), CHANNELS, WINDOW, 4)
    c_logits, c_traces = library.infer(library.quantize_input(x), explain=True, explained_class=2)
    assert np.array_equal(c_logits, reference) and np.array_equal(c_traces, traces)


def test_graphs_have_the_documented_interface_and_a_dynamic_batch(toy, tmp_path):
    zoo, qm = toy
    float_path, int8_path = exported(zoo, qm, tmp_path)
    x = random_windows(5, seed=3)
    for path, outputs in ((float_path, {"logits": ["batch", 4]}),
                          (int8_path, {"logits": ["batch", 4], "trace": ["batch", WINDOW]})):
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version >= 17
        (inp,) = model.graph.input
        assert inp.name == "input" and [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", CHANNELS, WINDOW]
        assert {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output} == outputs
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        one, five = session.run(None, {"input": x[:1]}), session.run(None, {"input": x})
        for a, b in zip(one, five):
            np.testing.assert_allclose(a, b[:1], atol=1e-6)
    int8 = onnx.load(str(int8_path))
    types = {o.name: o.type.tensor_type.elem_type for o in int8.graph.output}
    assert types == {"logits": onnx.TensorProto.INT8, "trace": onnx.TensorProto.INT16}
    properties = {p.key: p.value for p in int8.metadata_props}
    assert float(properties["logit_scale"]) == qm.logit_scale and int(properties["logit_zero_point"]) == qm.logit_zero_point
    assert [float(s) for s in properties["trace_scale"].split(",")] == [qm.trace_scale(c) for c in range(4)]


def test_int8_graph_stores_the_int8_weights_and_uses_no_cpu_dependent_quantized_kernel(toy, tmp_path):
    zoo, qm = toy
    model = onnx.load(str(export_int8(qm, tmp_path / "int8.onnx")))
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for i, layer in enumerate(qm.convs):
        assert initializers[f"conv{i}_weight_int8"].dtype == np.int8
        assert np.array_equal(initializers[f"conv{i}_weight_int8"], layer.weight)
        assert np.array_equal(initializers[f"conv{i}_bias"].reshape(-1), layer.bias)
    assert np.array_equal(initializers["head_weight"], qm.head_weight)
    ops = {node.op_type for node in model.graph.node}
    assert not ops & {"QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul", "QuantizeLinear", "DequantizeLinear"}


def test_a_convolution_that_could_leave_float32_exact_integers_is_split_into_exact_channel_groups(tmp_path):
    """Wide layers: each group's worst case stays below 2**24 and the graph is still bit-exact."""
    zoo = toy_model(seed=8, widths=(8, 160, 160))
    qm = quantize_model(zoo, random_windows(256, seed=9))
    wide = qm.convs[2]
    groups = _exact_channel_groups(wide)
    assert len(groups) > 1 and groups[0][0] == 0 and groups[-1][1] == wide.weight.shape[1]
    assert all(a < b == c for (a, b), (c, _) in zip(groups, groups[1:]))
    largest = max(abs(-128 - wide.input_zero_point), abs(127 - wide.input_zero_point))
    for a, b in groups:
        assert (np.abs(wide.weight[:, a:b].astype(np.int64)).sum(axis=(1, 2)) * largest < FLOAT32_EXACT).all()
    report = compare(zoo, qm, random_windows(64, seed=10), None, export_int8(qm, tmp_path / "int8.onnx"))
    assert report["int8"]["logits_identical_to_reference"] == report["int8"]["traces_identical_to_reference"] == 64


def test_qat_model_exports_fake_quantized_weights_and_matches_the_reference(tmp_path):
    zoo = toy_model(seed=4)
    qat = prepare_qat(fold_batch_norm(zoo.model))
    calibrate(qat, [torch.from_numpy(random_windows(256, seed=5))])
    qat.eval()
    zoo = dataclasses.replace(zoo, model=qat, card={"name": "toy_qat"})
    qm = quantize_model(zoo, random_windows(256, seed=6))
    assert qm.source["quantization"] == "qat"
    float_path, int8_path = exported(zoo, qm, tmp_path)
    report = compare(zoo, qm, random_windows(500, seed=7), float_path, int8_path)
    assert report["float"]["torch_model"] == "zoo model without activation fake quantization"
    assert report["float"]["max_abs_logit_diff"] < 1e-4
    assert report["int8"]["logits_identical_to_reference"] == report["int8"]["traces_identical_to_reference"] == 500
    weight = onnx.numpy_helper.to_array(next(t for t in onnx.load(str(float_path)).graph.initializer if t.name == "conv0_weight"))
    np.testing.assert_allclose(weight, qat.features[1].weight.detach().numpy())  # features[0] quantizes the input


def test_zoo_ecg_beat_on_synthetic_beats(tmp_path):
    zoo = load_model("ecg_beat")

    def windows(seed: int) -> np.ndarray:
        ecg = synthetic_ecg(duration_s=180, fs=ECG_FS, heart_rate=75, heart_rate_std=3.0,
                            ectopic={"S": 0.1, "V": 0.1}, seed=seed)
        return beat_windows(ecg_tracks(ecg.signal, ecg.r_peaks), np.arange(len(ecg.r_peaks)), zoo.spec.window)

    qm = quantize_model(zoo, windows(seed=0))
    report = compare(zoo, qm, windows(seed=1), *exported(zoo, qm, tmp_path))
    assert report["float"]["n"] > 150
    assert report["float"]["max_abs_logit_diff"] < 1e-3  # logits of tens: float32 rounding in 5 blocks
    assert report["float"]["label_agreement_with_torch"] == 1.0
    assert report["int8"]["logits_identical_to_reference"] == report["int8"]["traces_identical_to_reference"] == report["int8"]["n"]
    assert report["int8"]["label_agreement_with_torch"] >= 0.95


def test_errors_say_what_is_wrong_and_how_to_fix_it(toy, tmp_path, monkeypatch):
    zoo, qm = toy
    not_a_gapcnn = dataclasses.replace(zoo, model=nn.Sequential(nn.Conv1d(3, 4, 7)))
    with pytest.raises(HeartSightError, match="GapCnn"):
        export_float(not_a_gapcnn, tmp_path / "x.onnx")
    float_path, int8_path = exported(zoo, qm, tmp_path)
    with pytest.raises(HeartSightError, match=rf"shape \(N, {CHANNELS}, 128\)"):
        compare(zoo, qm, random_windows(4, seed=0, length=64), float_path, int8_path)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(HeartSightError, match="pip install onnxruntime"):
        Int8Session(int8_path)
