"""The int8 ONNX graph gives the integer reference bit for bit on a CPU without VNNI or AVX-512.

onnxruntime's int8 kernels differ between CPUs (on x86 with AVX2 but without VNNI the u8s8 kernels saturate), so a
test on this machine alone proves little. Here onnxruntime runs under QEMU's user-mode emulation of a Haswell CPU
(AVX2, no AVX-512, no VNNI): what onnxruntime detects, and dispatches on, is that CPU.
"""

import json
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest

from firmware_export import reference
from firmware_export.artifact import INT8_ONNX, artifact_of
from models.registry import load_model
from sdk.data.preprocess import ECG_FS, beat_windows, ecg_tracks
from sdk.data.synthetic import synthetic_ecg

EMULATED_CPU = "Haswell-v4"
# Runs in the emulated CPU: plain onnxruntime and numpy (no torch: its import is slow under emulation).
CHILD = """
import json, sys
import numpy as np
import onnxruntime as ort
from numpy._core._multiarray_umath import __cpu_features__ as features
x = np.load(sys.argv[1])
session = ort.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
logits, trace = session.run(["logits", "trace"], {"input": x})
np.save(sys.argv[3], logits)
np.save(sys.argv[4], trace)
print(json.dumps({k: bool(features.get(k)) for k in ("AVX2", "AVX512F", "AVX512VNNI")}))
"""


@pytest.mark.skipif(platform.machine() != "x86_64" or shutil.which("qemu-x86_64") is None,
                    reason="needs an x86-64 host and QEMU user-mode emulation (apt-get install -y qemu-user)")
def test_the_device_model_graph_equals_the_integer_reference_on_an_emulated_cpu_without_vnni(tmp_path):
    artifact = artifact_of(load_model("ecg_beat_wcam"))
    ecg = synthetic_ecg(duration_s=120, fs=ECG_FS, heart_rate=80, ectopic={"S": 0.1, "V": 0.1}, seed=5)
    x = beat_windows(ecg_tracks(ecg.signal, ecg.r_peaks), np.arange(len(ecg.r_peaks)), artifact.spec.window)
    x[0, 0, :3] = [np.nan, np.inf, -1e30]
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run(["qemu-x86_64", "-cpu", EMULATED_CPU, sys.executable, "-c", CHILD, str(tmp_path / "x.npy"),
                          str(artifact.directory / INT8_ONNX), str(tmp_path / "logits.npy"), str(tmp_path / "trace.npy")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    features = json.loads(run.stdout.strip().splitlines()[-1])
    assert features == {"AVX2": True, "AVX512F": False, "AVX512VNNI": False}  # the CPU onnxruntime saw
    logits, last = reference.infer(artifact.quantized, reference.quantize_input(artifact.quantized, x))
    assert np.array_equal(np.load(tmp_path / "logits.npy"), logits)
    assert np.array_equal(np.load(tmp_path / "trace.npy"), reference.explain(artifact.quantized, last, logits.argmax(1)))
