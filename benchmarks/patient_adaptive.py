"""The patient-adaptive protocol (AAMI EC57; de Chazal & Reilly 2006) for the beat models' int8 exports.

1. Settings, chosen on DS1 alone: each DS1 patient's head is fitted on the other DS1 patients and the first 5 minutes
   of their own record, and scored on the rest; the patient weight and class-weight power with the best mean F1 of
   N, S and V pooled over DS1 are written into the model's cards (patient_adaptation), where every per-patient fit
   (`heartsight evaluate --protocol patient-adaptive`, `heartsight clinician recalibrate`) reads them.
2. DS2 (`sdk.device.recalibration.patient_adaptive`): each DS2 record's head refitted on DS1 and its first 5 minutes,
   scored on the rest, on the c backend for both models and on torch and onnxruntime for ecg_beat_wcam; per record
   and pooled Se and +P, and the recalibrated traces' cosine to the float model's under the same head.

Writes benchmarks/results/patient_adaptive.json and .md. Usage: python -m benchmarks.patient_adaptive [DATA_DIR]
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import describe
from models.closed_form_head import patient_head
from sdk.data import mitdb
from sdk.device.backends import make_runner
from sdk.device.recalibration import labelled_beats, patient_adaptive, population
from sdk.training import metrics

RESULTS = Path(__file__).resolve().parent / "results"
ZOO = Path(__file__).resolve().parents[1] / "models" / "zoo"
MODELS = ("ecg_beat_wcam", "ecg_beat")
PATIENT_WEIGHTS, CLASS_WEIGHT_POWERS = (30, 100, 300, 1000), (0.25, 0.5, 1.0)
RUNS = (("ecg_beat_wcam", "c"), ("ecg_beat_wcam", "onnxruntime"), ("ecg_beat_wcam", "torch"), ("ecg_beat", "c"))


def choose_on_ds1(model: str, data_root) -> dict:
    """The settings with the best pooled mean F1 of N, S and V over DS1's patients, each adapted leave-one-out."""
    runner = make_runner(model, "c")
    embeddings, labels = population(runner, data_root)
    records = np.concatenate([np.full(len(labelled_beats(name, data_root)), name) for name in mitdb.DS1])
    labelled = np.concatenate([labelled_beats(name, data_root) for name in mitdb.DS1])
    classes = runner.spec.outputs
    scores = {}
    for weight, power in itertools.product(PATIENT_WEIGHTS, CLASS_WEIGHT_POWERS):
        truth, predicted = [], []
        for name in mitdb.DS1:
            own = records == name
            head_weight, head_bias = patient_head((embeddings[~own], labels[~own]),
                                                  (embeddings[own & labelled], labels[own & labelled]), classes,
                                                  weight, power)
            rest = own & ~labelled
            truth.append(labels[rest])
            predicted.append((embeddings[rest] @ head_weight.T + head_bias).argmax(1))
        report = metrics.classification_report(np.concatenate(truth), np.concatenate(predicted), classes)
        scores[(weight, power)] = float(np.mean([report["per_class"][c]["f1"] for c in ("N", "S", "V")]))
        print(f"{model} DS1: patient weight {weight}, class-weight power {power}: mean F1 N/S/V "
              f"{scores[(weight, power)]:.4f}", flush=True)
    weight, power = max(scores, key=scores.get)
    return {"patient_weight": weight, "class_weight_power": power,
            "chosen_on": "DS1, each patient adapted on its first 5 minutes with the other DS1 patients as the "
                         "population; best pooled mean F1 of N, S and V (benchmarks/patient_adaptive.py)",
            "ds1_scores": {f"{w}/{p}": round(s, 4) for (w, p), s in scores.items()}}


def record_choice(model: str, chosen: dict) -> None:
    for card_path in (ZOO / model / "card.json", ZOO / model / "int8" / "card.json"):
        card = json.loads(card_path.read_text())
        card["patient_adaptation"] = chosen
        card_path.write_text(json.dumps(card, indent=2) + "\n")


def main(argv: list[str]) -> None:
    data_root = argv[0] if argv else None
    result = {"machine": describe(), "chosen": {}, "runs": []}
    for model in MODELS:
        result["chosen"][model] = choose_on_ds1(model, data_root)
        record_choice(model, result["chosen"][model])
    for model, backend in RUNS:
        started = time.perf_counter()
        run = patient_adaptive(model, backend, data_root)
        run["seconds"] = round(time.perf_counter() - started, 1)
        result["runs"].append({k: v for k, v in run.items() if k != "confusion"})
        print(markdown(result), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "patient_adaptive.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "patient_adaptive.md").write_text(markdown(result))


def markdown(result: dict) -> str:
    lines = ["# Patient-adaptive DS2 (head refitted per record on its first 5 minutes, scored on the rest)", "",
             f"Machine: {result['machine']}. Settings chosen on DS1 alone: "
             + "; ".join(f"{m}: patient weight {c['patient_weight']}, class-weight power {c['class_weight_power']}"
                         for m, c in result["chosen"].items()) + ".", "",
             "| model | backend | N Se / +P | S Se / +P | V Se / +P | F Se / +P | CAM cosine to float (p05) | "
             "both traces empty | time (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for run in result["runs"]:
        per = " | ".join(f"{run['per_class'][c]['se']:.3f} / {run['per_class'][c]['ppv']:.3f}" for c in "NSVF")
        e = run["explanation"]
        lines.append(f"| {run['model']} | {run['backend']} | {per} | {e['cosine_to_float_mean']} "
                     f"({e['cosine_to_float_p05']}) | {e['both_traces_empty']:.1%} | {run['seconds']} |")
    for run in result["runs"]:
        if run["backend"] != "c":
            continue
        lines += ["", f"## {run['model']} (c), per record", "", "| record | S Se / +P / n | V Se / +P / n |",
                  "|---|---|---|"]
        for name, r in run["per_record"].items():
            lines.append(f"| {name} | {r['S']['se']:.3f} / {r['S']['ppv']:.3f} / {r['S']['n']} | "
                         f"{r['V']['se']:.3f} / {r['V']['ppv']:.3f} / {r['V']['n']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
