"""The int8 export: the integer reference, the generated C library and its report, host and Cortex-M4 builds."""

import ctypes
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DATA, needs_cmsis_nn, needs_mitdb, needs_wrist
from firmware_export import reference, verify
from firmware_export.codegen import RUNTIME, Tensor, activation_tensors, arena_layout, write_c_library
from firmware_export.host import HOST_OPTIMISATION, STRICT_FLAGS, CModel, build_shared_library
from firmware_export.quantize import QuantizedConv, load_quantized, quantize_model, quantize_multiplier, save_quantized
from firmware_export.target import toolchain_missing
from models.architectures import GapCnn
from models.registry import ZooModel, get_spec
from sdk.errors import HeartSightError

TOY_SPEC = replace(get_spec("ecg_beat"), window=96, widths=(6, 8, 10))


def _toy_zoo(seed=0):
    torch.manual_seed(seed)
    model = GapCnn(len(TOY_SPEC.input_channels), TOY_SPEC.widths, 7, 4)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 2.0)
            module.bias.data.uniform_(-0.2, 0.2)
    return ZooModel(TOY_SPEC, model.eval(), {"name": "toy", "version": "0", "sha256": "ab" * 32}, Path("."))


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    library = tmp_path_factory.mktemp("kernels") / "libkernels.so"
    subprocess.run(["gcc", *STRICT_FLAGS, *HOST_OPTIMISATION, "-shared", "-fPIC", "-o", str(library), str(RUNTIME / "hs_kernels.c")], check=True)
    lib = ctypes.CDLL(str(library))
    lib.hs_requantize.restype = ctypes.c_int32
    lib.hs_requantize.argtypes = [ctypes.c_int32] * 3
    lib.hs_conv1d_relu.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int32, *[ctypes.c_void_p] * 4,
                                   ctypes.c_int, ctypes.c_int, ctypes.c_int32, ctypes.c_int, ctypes.c_void_p]
    return lib


def test_quantize_multiplier_represents_the_real_multiplier():
    for real in (0.5, 0.0123, 0.99999, 1.7, 3e-6):
        q, shift = quantize_multiplier(real)
        assert 2 ** 30 <= q < 2 ** 31
        assert q * 2.0 ** (shift - 31) == pytest.approx(real, rel=1e-9)
    assert quantize_multiplier(0.5) == (2 ** 30, 0)


def test_requantize_rounds_like_the_c_kernel_on_random_and_edge_values(kernels):
    rng = np.random.default_rng(0)
    acc = np.concatenate([rng.integers(-2 ** 31, 2 ** 31, 3000), rng.integers(-5000, 5000, 3000),
                          [0, 1, -1, 3, -3, 2 ** 31 - 1, -2 ** 31]])
    multipliers = rng.integers(2 ** 30, 2 ** 31, len(acc))
    shifts = rng.integers(-20, 3, len(acc))
    expected = reference.requantize(acc, multipliers, shifts)
    actual = [kernels.hs_requantize(int(a), int(m), int(s)) for a, m, s in zip(acc, multipliers, shifts)]
    assert np.array_equal(expected, np.array(actual))
    q, shift = quantize_multiplier(0.5)
    assert reference.requantize(np.array([3, 100, 101]), q, shift).tolist() == [2, 50, 51]  # ties away from zero


@pytest.mark.parametrize("pool", [False, True])
@pytest.mark.parametrize("kernel", [1, 3, 4, 7, 9])
@pytest.mark.parametrize("length", [1, 2, 5, 6, 31, 32, 33, 70, 131])
def test_the_c_convolution_matches_the_reference_at_edges_short_signals_and_partial_blocks(kernels, kernel, length,
                                                                                            pool):
    """The C kernel splits time into blocks of four outputs, computed sample by sample where they reach the padding,
    and may max-pool them in the same pass (an odd last sample dropped); every split must give the same integers."""
    rng = np.random.default_rng(kernel * 1000 + length)
    channels, out_channels = 3, 4
    layer = QuantizedConv(weight=rng.integers(-127, 128, (out_channels, channels, kernel)).astype(np.int8),
                          bias=rng.integers(-20000, 20000, out_channels).astype(np.int32),
                          multiplier=rng.integers(2 ** 30, 2 ** 31, out_channels).astype(np.int32),
                          shift=rng.integers(-12, -6, out_channels).astype(np.int8),
                          input_zero_point=int(rng.integers(-128, 128)), output_scale=1.0,
                          output_zero_point=int(rng.integers(-128, 0)), pool_after=pool,
                          weight_scale=np.ones(out_channels))
    x = rng.integers(-128, 128, (1, channels, length)).astype(np.int8)
    out = np.zeros((out_channels, length // 2 if pool else length), np.int8)
    kernels.hs_conv1d_relu(x.ctypes.data, channels, length, layer.input_zero_point, layer.weight.ctypes.data,
                           layer.bias.ctypes.data, layer.multiplier.ctypes.data, layer.shift.ctypes.data,
                           out_channels, kernel, layer.output_zero_point, int(pool), out.ctypes.data)
    assert np.array_equal(out, reference.conv_block(layer, x)[0])


def test_the_integer_model_follows_the_float_model_and_its_explanation():
    zoo = _toy_zoo()
    zoo.model.head.weight.data.uniform_(-0.5, 1.0)  # mostly positive: class activation maps that are not all zero
    x = np.random.default_rng(1).normal(0, 1, (200, len(TOY_SPEC.input_channels), TOY_SPEC.window)).astype(np.float32)
    quantized = quantize_model(zoo, x[:100])
    logits, last = reference.infer(quantized, reference.quantize_input(quantized, x))
    with torch.no_grad():
        float_logits = zoo.model(torch.from_numpy(x)).numpy()
    assert np.mean(logits.argmax(1) == float_logits.argmax(1)) > 0.9
    assert np.abs(reference.dequantize_logits(quantized, logits) - float_logits).max() < 0.1 * np.abs(float_logits).max()
    from sdk.explain import ClassActivationMap
    from sdk.explain.metrics import cosine_similarity

    target = logits.argmax(1)
    traces = reference.explain(quantized, last, target)
    float_traces = ClassActivationMap(zoo.model).attribute(torch.from_numpy(x), torch.from_numpy(target.astype(np.int64)))
    assert traces.dtype == np.int16 and traces.shape == (200, TOY_SPEC.window) and traces.min() >= 0
    assert np.median(cosine_similarity(traces, float_traces)) > 0.98
    scale = np.array([quantized.trace_scale(c) for c in target])[:, None]
    assert np.abs(traces * scale - float_traces.numpy()).max() < 0.1 * float_traces.max().item()


def test_cmsis_nn_kernels_are_refused_for_layers_they_cannot_run_exactly(tmp_path):
    quantized = quantize_model(_toy_zoo(), np.random.default_rng(0).normal(
        size=(16, len(TOY_SPEC.input_channels), 96)).astype(np.float32))
    with pytest.raises(HeartSightError, match="unknown --kernels 'cmsis'"):
        write_c_library(quantized, tmp_path / "a", head_updates=False, kernels="cmsis")
    grouped = replace(quantized, convs=[replace(quantized.convs[0], structure={"kind": "grouped", "groups": 1,
                                                                                 "input_order": [0]}),
                                        *quantized.convs[1:]])
    with pytest.raises(HeartSightError, match="dense convolutions only, and conv 0 is grouped.*--kernels portable"):
        write_c_library(grouped, tmp_path / "b", head_updates=False, kernels="cmsis-nn")
    amplifying = replace(quantized, convs=[replace(quantized.convs[0], shift=quantized.convs[0].shift + 40),
                                           *quantized.convs[1:]])
    with pytest.raises(HeartSightError, match="conv 0 has a requantization multiplier above 1"):
        write_c_library(amplifying, tmp_path / "c", head_updates=False, kernels="cmsis-nn")
    assert not any(tmp_path.iterdir())  # refused before anything is written
    report = write_c_library(quantized, tmp_path / "ok", head_updates=False, kernels="cmsis-nn")
    assert report["kernels"] == "cmsis-nn" and (tmp_path / "ok" / "hs_cmsis.c").exists()
    assert "CMSIS_NN_DIR" in (tmp_path / "ok" / "CMakeLists.txt").read_text()



@needs_cmsis_nn
@pytest.mark.skipif(toolchain_missing() is not None, reason=str(toolchain_missing()))
def test_cmsis_nn_layers_are_bit_exact_for_odd_widths_lengths_and_an_even_kernel_on_a_cortex_m4(tmp_path):
    """The CMSIS-NN convolution pads in the arena (kernel / 2 rows before, the rest after) and multiplies overlapping
    rows: odd channel counts and lengths leave CMSIS-NN's leftover rows and columns, an even kernel pads unevenly."""
    from firmware_export.target import run_on_qemu

    spec = replace(TOY_SPEC, window=90, widths=(5, 7, 9))
    torch.manual_seed(1)
    zoo = ZooModel(spec, GapCnn(len(spec.input_channels), spec.widths, 7, 4).eval(), {"name": "toy"}, Path("."))
    x = np.random.default_rng(1).normal(size=(8, len(spec.input_channels), spec.window)).astype(np.float32)
    quantized = quantize_model(zoo, x)
    middle = quantized.convs[1]
    quantized = replace(quantized, convs=[quantized.convs[0], replace(middle, weight=middle.weight[:, :, :6].copy()),
                                          *quantized.convs[2:]])  # a 6-tap kernel: 3 rows of padding before, 2 after
    x_q = reference.quantize_input(quantized, x)
    logits, traces = reference.infer_and_explain(quantized, x_q)
    for kernels in ("portable", "cmsis-nn"):
        write_c_library(quantized, tmp_path / kernels, head_updates=False, kernels=kernels)
        result = run_on_qemu(tmp_path / kernels, x_q, logits, traces, tmp_path / f"firmware-{kernels}")
        assert result["n"] == result["exact"] == 8, kernels
def test_the_arena_holds_every_pair_of_live_tensors_without_overlap():
    tensors = [Tensor("a", 4, 100, 0, 1), Tensor("b", 4, 50, 1, 2), Tensor("c", 8, 50, 2, 3), Tensor("d", 8, 25, 3, 5)]
    offsets, arena, peak = arena_layout(tensors)
    assert arena == peak == 400 + 200 == max(400 + 200, 200 + 400, 400 + 200)
    quantized = quantize_model(_toy_zoo(), np.random.default_rng(0).normal(size=(16, len(TOY_SPEC.input_channels), 96)).astype(np.float32))
    tensors = activation_tensors(quantized)  # dense blocks pool in their kernel: no full-length outputs in the arena
    assert [(t.name, t.length) for t in tensors] == [("block0", 48), ("block1", 24), ("block2", 24)]
    _, arena, peak = arena_layout(tensors)
    assert arena == max(a.size + b.size for a, b in zip(tensors, tensors[1:]))


def test_generated_library_is_bit_exact_on_the_host_including_input_quantization_and_bad_classes(tmp_path):
    zoo = _toy_zoo(seed=3)
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1.5, (40, len(TOY_SPEC.input_channels), TOY_SPEC.window)).astype(np.float32)
    quantized = quantize_model(zoo, x[:20])
    x[0, 0, :4] = [np.nan, np.inf, -np.inf, 1e30]
    x[1, 0, :3] = (np.array([0.5, -0.5, 2.5]) * quantized.input_scale).astype(np.float32)  # rounding ties
    report = write_c_library(quantized, tmp_path, head_updates=True)
    model = CModel(build_shared_library(tmp_path), len(TOY_SPEC.input_channels), TOY_SPEC.window, 4)
    expected_q = reference.quantize_input(quantized, x)
    assert np.array_equal(model.quantize_input(x), expected_q)
    logits, traces = model.infer(expected_q, explain=True)
    expected_logits, last = reference.infer(quantized, expected_q)
    assert np.array_equal(logits, expected_logits)
    assert np.array_equal(traces, reference.explain(quantized, last, expected_logits.argmax(1)))
    for class_index in range(4):  # any class, not only the predicted one
        trace = np.zeros(TOY_SPEC.window, np.int16)
        model.library.hs_explain(class_index, trace.ctypes.data)
        assert np.array_equal(trace, reference.explain(quantized, last[-1:], np.array([class_index]))[0])
    trace = np.ones(TOY_SPEC.window, np.int16)
    model.library.hs_explain(7, trace.ctypes.data)
    assert not trace.any()
    model.library.hs_trace_scale.restype = model.library.hs_logit_scale.restype = ctypes.c_float
    for class_index in range(4):  # the real units of the head in use, as the firmware reads them
        assert model.library.hs_trace_scale(class_index) == pytest.approx(quantized.trace_scale(class_index), rel=1e-6)
    assert model.library.hs_trace_scale(7) == 0.0
    assert model.library.hs_logit_scale() == pytest.approx(quantized.logit_scale, rel=1e-6)
    assert model.library.hs_logit_zero_point() == quantized.logit_zero_point and model.head_version == 0
    header = (tmp_path / "heartsight_model.h").read_text()
    assert "#define HS_INPUT_LENGTH 96" in header and f"#define HS_ARENA_BYTES {report['ram']['arena']}" in header
    assert "malloc" not in (tmp_path / "heartsight_model.c").read_text() + (tmp_path / "hs_kernels.c").read_text()
    assert "float" not in (tmp_path / "hs_kernels.c").read_text()
    assert report["flash"]["weights"] == report["lower_bounds"]["flash_int8_weights"] == sum(
        p.numel() for n, p in zoo.model.named_parameters() if n.endswith("weight") and p.ndim > 1)


def test_the_quantized_model_round_trips_through_its_json(tmp_path):
    quantized = quantize_model(_toy_zoo(), np.random.default_rng(0).normal(size=(16, len(TOY_SPEC.input_channels), 96)).astype(np.float32))
    save_quantized(quantized, tmp_path)
    again = load_quantized(tmp_path)
    x_q = reference.quantize_input(quantized, np.random.default_rng(1).normal(size=(8, len(TOY_SPEC.input_channels), 96)))
    assert np.array_equal(reference.infer(again, x_q)[0], reference.infer(quantized, x_q)[0])
    assert all(np.array_equal(a.weight_scale, b.weight_scale) for a, b in zip(again.convs, quantized.convs))
    record = json.loads((tmp_path / "quantized_model.json").read_text())
    del record["convs"][0]["weight_scale"]  # as an export from before weight scales were stored
    (tmp_path / "quantized_model.json").write_text(json.dumps(record))
    with pytest.raises(HeartSightError, match="older HeartSight.*export the model again"):
        load_quantized(tmp_path)


@pytest.fixture(scope="module")
def exported_zoo():
    """Every zoo model's shipped int8 export (models/zoo/NAME/int8), as `heartsight export` wrote it."""
    from models.registry import ZOO_DIR

    return {card.parent.name: card.parent / "int8" for card in sorted(ZOO_DIR.glob("*/card.json"))}


@needs_mitdb
@needs_wrist
@needs_cmsis_nn
@pytest.mark.skipif(toolchain_missing() is not None, reason=str(toolchain_missing()))
def test_every_shipped_export_is_bit_exact_on_the_host_and_on_a_cortex_m4(exported_zoo):
    assert {"ecg_beat", "ecg_beat_wcam", "ecg_af", "ppg_hr"} <= set(exported_zoo)
    for name, directory in exported_zoo.items():
        result = verify(directory, n=12, qemu=True, data_root=DATA)
        host_head = result["host"].pop("head", None)
        assert result["host"] == {"n": 12, "exact": 12}, name
        assert result["qemu"]["n"] == 12 and result["qemu"]["exact"] == 12, name
        if name == "ppg_hr":  # a heart-rate head is not replaceable
            assert host_head is None and "head" not in result["qemu"]
        else:  # a signed head update applied at run time, bit-exact with the reference; a tampered one refused
            assert host_head == {"status": 0, "n": 12, "exact": 12}, name
            assert result["qemu"]["head"] == {"status": 0, "refused_tampered": True, "version": 1, "n": 12,
                                              "exact": 12}, name
        report = json.loads((directory / "report.json").read_text())
        assert result["flash_bytes"] == report["flash_bytes"] >= report["lower_bounds"]["flash_int8_weights"]
        # instructions per window on the Cortex-M4 (QEMU -icount): the portable kernels' budget, the explainer's
        qemu = result["qemu"]
        low, high = qemu["instructions_infer_range"]
        assert 1.0 < qemu["instructions_per_mac"] <= 6.0 and high - low < 0.01 * low, name
        assert qemu["explain_share"] <= 0.10, name
        if name == "ecg_beat_wcam":  # the device model ships on CMSIS-NN too: the same integers, fewer instructions
            cmsis = result["qemu_cmsis_nn"]
            assert cmsis["n"] == cmsis["exact"] == 12 and cmsis["head"]["exact"] == 12
            assert cmsis["instructions_per_mac"] < 0.75 * qemu["instructions_per_mac"]
        else:
            assert "qemu_cmsis_nn" not in result, name


@needs_mitdb
def test_export_writes_one_artifact_with_its_calibration_and_scores_and_matches_the_shipped_one(tmp_path, heartsight_main):
    from firmware_export.artifact import load_artifact
    from models.registry import ZOO_DIR

    out = tmp_path / "device_model"
    run = heartsight_main("export", "--model", "ecg_beat_wcam", "--out", out, "--data-dir", DATA)
    assert run.returncode == 0, run.stderr
    assert "256/256 held-out windows bit-exact" in run.stdout
    names = {p.name for p in out.iterdir()}
    assert {"quantized_model.json", "heartsight_model.c", "heartsight_model.h", "hs_kernels.c", "hs_kernels.h",
            "model_int8.onnx", "model_float.onnx", "card.json", "report.json"} <= names
    artifact, shipped = load_artifact(out), load_artifact(ZOO_DIR / "ecg_beat_wcam" / "int8")
    assert artifact.card["int8"]["calibration"] == shipped.card["int8"]["calibration"]
    assert artifact.card["int8"]["calibration"]["windows"] > 0
    assert f'#define HS_INT8_SHA256 "{artifact.sha256}"' in (out / "heartsight_model.h").read_text()
    # the weights are integers of the committed float weights: the same on every machine
    for mine, theirs in zip(artifact.quantized.convs, shipped.quantized.convs):
        assert np.array_equal(mine.weight, theirs.weight)
        assert mine.output_scale == pytest.approx(theirs.output_scale, rel=1e-6)
    scores = artifact.card["int8"]["metrics"]
    assert scores["backend"] == "c" and scores["n"] > 49_000
    assert scores["accuracy"] == pytest.approx(shipped.card["int8"]["metrics"]["accuracy"], abs=0.002)


@needs_mitdb
def test_an_export_over_budget_is_refused_with_its_report_and_writes_nothing(tmp_path, heartsight_main):
    run = heartsight_main("export", "--model", "ecg_beat", "--out", tmp_path / "c", "--max-flash", 20000,
                          "--data-dir", DATA)
    assert run.returncode == 2
    assert "does not fit: flash" in run.stderr and "lower bound (int8 weights)" in run.stderr
    assert not (tmp_path / "c").exists()


@needs_mitdb
@needs_wrist
def test_verify_firmware_json_from_the_command_line(exported_zoo, heartsight_main):
    run = heartsight_main("verify-firmware", exported_zoo["ecg_beat"], "--n", 4, "--json", "--data-dir", DATA)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["host"] == {"n": 4, "exact": 4, "head": {"status": 0, "n": 4, "exact": 4}}
    assert result["macs"] > 1_000_000 and "qemu" not in result


def test_verifying_a_directory_that_was_not_exported_says_how_to_export(tmp_path, heartsight_main):
    run = heartsight_main("verify-firmware", tmp_path)
    assert run.returncode == 2 and "heartsight export --model NAME --out DIR" in run.stderr


def test_a_qat_model_exports_with_its_trained_ranges_and_the_integer_model_follows_it():
    from models.architectures import fold_batch_norm
    from models.quantization import activation_quantizers, calibrate, prepare_qat

    zoo = _toy_zoo(seed=4)
    x = np.random.default_rng(5).normal(0, 1, (300, len(TOY_SPEC.input_channels), TOY_SPEC.window)).astype(np.float32)
    qat = prepare_qat(fold_batch_norm(zoo.model))
    calibrate(qat, [torch.from_numpy(x[:100])])
    qat_zoo = ZooModel(TOY_SPEC, qat.eval(), {"name": "toy_qat"}, Path("."))
    quantized = quantize_model(qat_zoo, x[:50])
    ranges = [q.qparams() for q in activation_quantizers(qat)]
    assert (quantized.input_scale, quantized.input_zero_point) == ranges[0]
    assert [(c.output_scale, c.output_zero_point) for c in quantized.convs] == ranges[1:]
    assert quantized.source["quantization"] == "qat"
    logits, _ = reference.infer(quantized, reference.quantize_input(quantized, x))
    with torch.no_grad():
        simulated = qat(torch.from_numpy(x)).numpy()
    assert np.mean(logits.argmax(1) == simulated.argmax(1)) > 0.97
    assert np.abs(reference.dequantize_logits(quantized, logits) - simulated).max() < 3 * quantized.logit_scale
