"""Does an int8 ONNX model give the same integers on every CPU? The zoo's exact integer graphs against the QDQ
graph onnxruntime's own quantizer makes from the same float model, on this CPU and on an emulated Haswell (AVX2,
no AVX-512, no VNNI: QEMU user mode, so onnxruntime detects and dispatches on that CPU).

For each zoo model, 512 held-out windows (DS2 / held-out records when the data is present, else synthetic or random
windows). Writes benchmarks/results/onnx_portability.md and .json. Usage: python -m benchmarks.onnx_portability
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import machine
from firmware_export import reference
from firmware_export.artifact import FLOAT_ONNX, INT8_ONNX, artifact_of
from models.registry import ZOO_DIR, load_model
from sdk.data.datasets import CALIBRATION_WINDOWS, sample_windows
from sdk.errors import HeartSightError

RESULTS = Path(__file__).resolve().parent / "results"
EMULATED_CPU = "Haswell-v4"
WINDOWS = 512
CHILD = """
import json, sys
import numpy as np
import onnxruntime as ort
from numpy._core._multiarray_umath import __cpu_features__ as features
x = np.load(sys.argv[1])
outputs = {}
for name, path in json.loads(sys.argv[2]).items():
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outputs[name] = np.concatenate([session.run(None, {"input": x[i: i + 128]})[0] for i in range(0, len(x), 128)])
np.savez(sys.argv[3], **outputs)
print(json.dumps({k: bool(features.get(k)) for k in ("AVX2", "AVX512F", "AVX512BW", "AVX512VNNI")}))
"""


def _windows(spec, purpose: str, data_root, n: int, seed: int) -> np.ndarray:
    try:
        return sample_windows(spec, purpose, data_root, n, seed)[:n]
    except HeartSightError:  # no data: random windows of the model's shape
        rng = np.random.default_rng(seed)
        return rng.standard_normal((n, len(spec.input_channels), spec.input_length)).astype(np.float32)


def _onnxruntime_qdq(float_path: Path, calibration: np.ndarray, out: Path) -> Path:
    """onnxruntime's own static int8 quantization of the float graph: QDQ, u8 activations, s8 per-channel weights."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": calibration[i: i + 64]} for i in range(0, len(calibration), 64)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(float_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def _run(paths: dict, x: np.ndarray, work: Path, emulated: bool) -> tuple[dict, dict]:
    np.save(work / "x.npy", x)
    command = [sys.executable, "-c", CHILD, str(work / "x.npy"), json.dumps({k: str(v) for k, v in paths.items()}),
               str(work / "out.npz")]
    if emulated:
        command = ["qemu-x86_64", "-cpu", EMULATED_CPU, *command]
    run = subprocess.run(command, capture_output=True, text=True, check=True)
    outputs = np.load(work / "out.npz")
    return {k: outputs[k] for k in outputs.files}, json.loads(run.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    data_root = argv[0] if argv else None
    if platform.machine() != "x86_64" or shutil.which("qemu-x86_64") is None:
        raise SystemExit("needs an x86-64 host and qemu-user (apt-get install -y qemu-user)")
    rows, cpus = [], {}
    for card in sorted(ZOO_DIR.glob("*/card.json")):
        zoo = load_model(card.parent.name)
        artifact = artifact_of(zoo)
        x = _windows(zoo.spec, "test", data_root, WINDOWS, seed=1)
        logits, _ = reference.infer(artifact.quantized, reference.quantize_input(artifact.quantized, x))
        with tempfile.TemporaryDirectory() as work:
            work = Path(work)
            qdq = _onnxruntime_qdq(artifact.directory / FLOAT_ONNX,
                                   _windows(zoo.spec, "calibration", data_root, min(CALIBRATION_WINDOWS, 512), seed=0),
                                   work / "qdq.onnx")
            paths = {"integer_graph": artifact.directory / INT8_ONNX, "onnxruntime_qdq": qdq}
            native, cpus["native"] = _run(paths, x, work, emulated=False)
            emulated, cpus[EMULATED_CPU] = _run(paths, x, work, emulated=True)
        row = {"model": card.parent.name, "n": len(x)}
        for where, outputs in (("native", native), (EMULATED_CPU, emulated)):
            row[f"integer_graph_{where}_identical"] = int(np.all(outputs["integer_graph"] == logits, axis=1).sum())
        difference = np.abs(native["onnxruntime_qdq"] - emulated["onnxruntime_qdq"])
        row["qdq_max_logit_difference_between_cpus"] = float(difference.max())
        row["qdq_windows_differing_between_cpus"] = int((difference.max(axis=1) > 0).sum())
        row["qdq_label_agreement_between_cpus"] = float(np.mean(native["onnxruntime_qdq"].argmax(1)
                                                                 == emulated["onnxruntime_qdq"].argmax(1)))
        rows.append(row)
        print(row)
    import onnxruntime

    result = {"machine": machine.describe(), "onnxruntime": onnxruntime.__version__,
              "cpu_features_seen_by_onnxruntime": cpus, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "onnx_portability.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["# int8 ONNX on two CPUs", "",
             f"Machine: {result['machine']}. onnxruntime {onnxruntime.__version__}. Native CPU features: {cpus['native']}; emulated "
             f"{EMULATED_CPU} (QEMU user mode): {cpus[EMULATED_CPU]}. {WINDOWS} held-out windows per model.", "",
             "The zoo's int8 graph (`model_int8.onnx`, the integer reference as an ONNX graph) against the integer "
             "reference, and the QDQ graph onnxruntime's own `quantize_static` makes from the same float model "
             "(u8 activations, s8 per-channel weights) compared between the two CPUs.", "",
             "| model | integer graph = reference (native) | (emulated) | QDQ windows differing between CPUs | "
             "QDQ max logit difference | QDQ label agreement |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['integer_graph_native_identical']}/{r['n']} | "
                     f"{r[f'integer_graph_{EMULATED_CPU}_identical']}/{r['n']} | {r['qdq_windows_differing_between_cpus']} | "
                     f"{r['qdq_max_logit_difference_between_cpus']:.4f} | {r['qdq_label_agreement_between_cpus']:.4f} |")
    (RESULTS / "onnx_portability.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
