"""The device model against its teacher on DS2: rare-class scores (with and without record 232), sizes, traces.

Scores the float teacher (`ecg_beat`), its int8 export, and the device model (`ecg_beat_wcam`) as float and as
its int8 C library, each on every DS2 beat at the reference annotations. Record 232 holds about three in four
of DS2's S beats, so S is also reported without it. The trace columns compare each beat's saliency trace from
the device's C library (what a clinician sees, for the device's class) with the float teacher's trace for the
same class, over the beats where both models give the same class.

Writes benchmarks/results/device_model.json and device_model.md. Usage: python -m benchmarks.device_model [DATA_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import describe
from firmware_export.artifact import artifact_of
from models.architectures import predict
from models.registry import load_model
from sdk.data import mitdb
from sdk.data.datasets import beat_dataset
from sdk.device.backends import int8_runner
from sdk.explain import ClassActivationMap
from sdk.explain import metrics as explain_metrics
from sdk.training.recipes import beat_report

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {"flash_bytes": 16_384, "ram_bytes": 10_240, "rare_class_gap": 0.03, "trace_cosine": 0.95}
BATCH = 2048


def device_traces(runner, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    outputs, traces = [], []
    for i in range(0, len(x), BATCH):
        o, t = runner.explain(x[i: i + BATCH])
        outputs.append(o)
        traces.append(t)
    return np.concatenate(outputs), np.concatenate(traces)


def teacher_traces(teacher, x: np.ndarray, target: np.ndarray) -> np.ndarray:
    explainer = ClassActivationMap(teacher)
    return np.concatenate([explainer.attribute(torch.from_numpy(x[i: i + BATCH]), torch.from_numpy(target[i: i + BATCH])).numpy()
                           for i in range(0, len(x), BATCH)])


def main(argv: list[str]) -> None:
    data_root = argv[0] if argv else None
    teacher, device = load_model("ecg_beat"), load_model("ecg_beat_wcam")
    ds2 = beat_dataset(teacher.spec, mitdb.DS2, data_root)
    classes = teacher.spec.outputs
    teacher_int8, device_int8 = int8_runner(artifact_of(teacher), "c"), int8_runner(artifact_of(device), "c")
    teacher_class = predict(teacher.model, ds2.x).argmax(1)
    device_output, device_trace = device_traces(device_int8, ds2.x)
    device_class = device_output.argmax(1)
    rows = {
        "teacher (float)": beat_report(ds2, teacher_class, classes),
        "teacher (int8, C)": beat_report(ds2, teacher_int8(ds2.x).argmax(1), classes),
        "device (float QAT)": beat_report(ds2, predict(device.model, ds2.x).argmax(1), classes),
        "device (int8, C)": beat_report(ds2, device_class, classes),
    }
    agree = device_class == teacher_class
    teacher_trace = teacher_traces(teacher.model, ds2.x, teacher_class)
    cosine = explain_metrics.cosine_similarity(device_trace.astype(np.float32), teacher_trace)
    report = json.loads((artifact_of(device).directory / "report.json").read_text())
    result = {
        "machine": describe(), "beats": int(len(ds2.y)), "rows": rows,
        "device_size": {"flash_bytes": report["flash_bytes"], "ram_bytes": report["ram_bytes"]},
        "trace_cosine_same_class": round(float(cosine[agree].mean()), 4), "beats_same_class": int(agree.sum()),
        "device": {"name": device.card["name"], "reproduce": device.card.get("reproduce"),
                   "sha256": device.card.get("sha256")},
        "teacher_sha256": teacher.card.get("sha256"), "targets": TARGETS,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "device_model.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "device_model.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    rows = result["rows"]
    lines = ["# The device model against its teacher (DS2, inter-patient, every beat at the reference annotations)", "",
             f"Device model: `{result['device']['name']}` ({result['device']['reproduce']}). Machine: {result['machine']}.", "",
             "| model | acc | N Se | S Se | S +P | V Se | V +P | F Se | F +P | S Se without 232 | S +P without 232 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        c = r["per_class"]
        lines.append(f"| {name} | {r['accuracy']:.3f} | {c['N']['se']:.3f} | {c['S']['se']:.3f} | {c['S']['ppv']:.3f} | "
                     f"{c['V']['se']:.3f} | {c['V']['ppv']:.3f} | {c['F']['se']:.3f} | {c['F']['ppv']:.3f} | "
                     f"{r['S_without_232']['se']:.3f} | {r['S_without_232']['ppv']:.3f} |")
    teacher, device = rows["teacher (float)"]["per_class"], rows["device (int8, C)"]["per_class"]
    gaps = {f"{k} {m}": device[k][key] - teacher[k][key] for k in "SV" for m, key in (("Se", "se"), ("+P", "ppv"))}
    size = result["device_size"]
    lines += ["", "Device (int8, C) minus teacher (float): " + ", ".join(f"{k} {v:+.3f}" for k, v in gaps.items())
              + f" (target: each within {TARGETS['rare_class_gap']}).",
              f"Device size from its export report: flash {size['flash_bytes']:,} B (target <= {TARGETS['flash_bytes']:,}), "
              f"RAM {size['ram_bytes']:,} B (target <= {TARGETS['ram_bytes']:,}).",
              f"Saliency traces, device int8 C library vs float teacher, same class: mean cosine "
              f"{result['trace_cosine_same_class']:.3f} over the {result['beats_same_class']:,} of {result['beats']:,} "
              f"DS2 beats both models give the same class (target >= {TARGETS['trace_cosine']})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
