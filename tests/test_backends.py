"""Where a model runs: torch (float), and its one int8 export on the C library or onnxruntime, which agree exactly."""

import json
import shutil

import numpy as np
import pytest

from firmware_export import reference
from firmware_export.artifact import artifact_of, load_artifact
from models.registry import REGISTRY, ZOO_DIR, load_model
from sdk.data.preprocess import ECG_FS, beat_windows, ecg_tracks
from sdk.data.synthetic import synthetic_ecg
from sdk.device.backends import make_runner
from sdk.errors import HeartSightError

ZOO = sorted(p.parent.name for p in ZOO_DIR.glob("*/card.json"))


def windows_for(spec, n: int = 64, seed: int = 0) -> np.ndarray:
    """Synthetic beats for beat models; random windows with the model's shape otherwise."""
    if spec.task == "beat":
        ecg = synthetic_ecg(duration_s=120, fs=ECG_FS, heart_rate=75, ectopic={"S": 0.1, "V": 0.1}, seed=seed)
        return beat_windows(ecg_tracks(ecg.signal, ecg.r_peaks), np.arange(len(ecg.r_peaks)), spec.window)[:n]
    return np.random.default_rng(seed).standard_normal((n, len(spec.input_channels), spec.input_length)).astype(np.float32)


@pytest.mark.parametrize("name", ZOO)
def test_the_zoo_ships_an_int8_export_and_both_int8_backends_run_exactly_it(name):
    artifact = artifact_of(load_model(name))
    x = windows_for(artifact.spec)
    c, onnx = make_runner(name, "c"), make_runner(name, "onnxruntime")
    c_outputs, c_traces = c.explain(x)
    onnx_outputs, onnx_traces = onnx.explain(x)
    assert np.array_equal(c_outputs, onnx_outputs) and np.array_equal(c_traces, onnx_traces)
    quantized = artifact.quantized
    logits, last = reference.infer(quantized, reference.quantize_input(quantized, x))
    assert np.array_equal(c_outputs, reference.dequantize_logits(quantized, logits))
    explained = artifact.spec.explained(logits)  # the top class; AF for a rhythm model
    scales = np.array([quantized.trace_scale(k) for k in range(len(quantized.classes))])[explained][:, None]
    assert np.array_equal(c_traces, reference.explain(quantized, last, explained) * scales)
    assert c.identity == {**onnx.identity, "backend": "c"}
    assert c.identity["sha256"] == artifact.sha256 == artifact.card["int8"]["sha256"]
    assert c.batch_invariant and onnx.batch_invariant
    one_by_one = np.concatenate([c(x[i: i + 1]) for i in range(4)])
    assert np.array_equal(one_by_one, c_outputs[:4])


def test_int8_backends_follow_the_float_model_they_were_exported_from():
    x = windows_for(REGISTRY["ecg_beat"], n=400, seed=1)
    labels = {backend: make_runner("ecg_beat", backend)(x).argmax(1) for backend in ("torch", "c")}
    assert np.mean(labels["c"] == labels["torch"]) > 0.95


def test_an_exported_directory_runs_as_it_is_and_reports_its_own_hash(tmp_path):
    exported = tmp_path / "export"
    shutil.copytree(ZOO_DIR / "ecg_beat_wcam" / "int8", exported)
    runner = make_runner(str(exported))  # an export defaults to the C library
    assert runner.backend == "c"
    assert runner.identity["sha256"] == load_artifact(exported).sha256
    assert runner.identity["sha256"] != load_model("ecg_beat_wcam").card["sha256"]  # not the float weights'
    with pytest.raises(HeartSightError, match="int8 export, which runs on the c or onnxruntime backend"):
        make_runner(str(exported), "torch")
    record = json.loads((exported / "quantized_model.json").read_text())
    record["head_bias"][0] += 1
    (exported / "quantized_model.json").write_text(json.dumps(record) + "\n")
    with pytest.raises(HeartSightError, match="not the file that was exported"):
        make_runner(str(exported), "onnxruntime")


def test_a_model_without_an_export_says_how_to_make_one(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in ("card.json", "model.pt"):
        shutil.copyfile(ZOO_DIR / "ecg_beat" / name, model_dir / name)
    with pytest.raises(HeartSightError, match=r"no int8 export .* `heartsight export --model"):
        make_runner(str(model_dir), "c")
    assert make_runner(str(model_dir)).backend == "torch"


def test_an_unknown_backend_is_refused(heartsight_main):
    with pytest.raises(HeartSightError, match="torch, onnxruntime, c"):
        make_runner("ecg_beat", "tflite")
    run = heartsight_main("evaluate", "--model", "ecg_beat", "--backend", "tflite")
    assert run.returncode == 2 and "unknown backend 'tflite'" in run.stderr
