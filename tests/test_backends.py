"""The three places a model runs agree: torch (float), onnxruntime (int8 QDQ) and the generated C library (int8)."""

import numpy as np
import pytest

from conftest import DATA, needs_mitdb
from firmware_export import CALIBRATION_WINDOWS, real_windows, reference
from firmware_export.quantize import quantize_model
from models.registry import load_model
from sdk.device.backends import make_runner
from sdk.errors import HeartSightError
from test_cli import heartsight


@needs_mitdb
def test_int8_backends_agree_with_the_float_model_and_c_equals_the_integer_reference(tmp_path):
    zoo = load_model("ecg_beat")
    calibration = real_windows(zoo.spec, "calibration", DATA, CALIBRATION_WINDOWS)
    x = real_windows(zoo.spec, "test", DATA, 400)
    outputs = {backend: make_runner(zoo, backend, lambda: calibration, tmp_path / backend)(x)
               for backend in ("torch", "c", "onnxruntime")}
    quantized = quantize_model(zoo, calibration)
    integer_logits, _ = reference.infer(quantized, reference.quantize_input(quantized, x))
    assert np.array_equal(outputs["c"], reference.dequantize_logits(quantized, integer_logits))
    labels = {k: v.argmax(1) for k, v in outputs.items()}
    assert np.mean(labels["c"] == labels["torch"]) > 0.97
    assert np.mean(labels["onnxruntime"] == labels["c"]) > 0.98
    assert np.abs(outputs["onnxruntime"] - outputs["c"]).max() <= 2 * quantized.logit_scale + 1e-6


def test_an_unknown_backend_is_refused():
    with pytest.raises(HeartSightError, match="torch, onnxruntime, c"):
        make_runner(load_model("ecg_beat"), "tflite")
    run = heartsight("evaluate", "--model", "ecg_beat", "--backend", "tflite")
    assert run.returncode == 2 and "unknown backend 'tflite'" in run.stderr
