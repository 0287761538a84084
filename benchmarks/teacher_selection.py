"""Choosing the teacher's training design by cross-validation over DS1 patients, never by DS2.

The shipped teacher picks its checkpoint on four held-out DS1 patients (118, 124, 220, 223), which hold only
294 S beats: too few to choose between training designs (on issue 11 they ranked candidates the opposite way
to DS2). Here every DS1 patient is held out once: four patient folds, each holding S- and V-rich records and
one of the two records with normal beats in atrial fibrillation (201, 203). A design is a training set (DS1, or
DS1 plus the svdb patients) and a class-weight power. Each is trained on the other three folds (plus svdb when
the design has it) for the recipe's epochs (last epoch, no checkpoint selection) and scored on the held-out
fold; the design with the best pooled macro-F1 of N, S and V over all 22 DS1 patients is the recipe's.

Writes benchmarks/results/teacher_selection.json and .md (after every fold, so a stopped run keeps its rows).
Usage: python -m benchmarks.teacher_selection [--design SET:POWER ...] [--data DIR]
  e.g. --design DS1:0.25 DS1:0.5 DS1+SVDB:0.25
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.machine import describe
from models.architectures import predict
from models.registry import get_spec
from sdk.data.datasets import beat_dataset
from sdk.training import metrics
from sdk.training.recipes import BEAT_TRAINING_SETS, EPOCHS, beat_config
from sdk.training.train import fit

RESULTS = Path(__file__).resolve().parent / "results"
PATIENT_FOLDS = (
    ("209", "101", "112", "115", "106", "109"),
    ("201", "220", "116", "108", "122", "114"),
    ("207", "118", "230", "205", "215", "119"),
    ("223", "124", "203", "208"),
)
CLASSES_SCORED = ("N", "S", "V")


def macro_f1(report: dict) -> float:
    return float(np.mean([report["per_class"][c]["f1"] for c in CLASSES_SCORED]))


def cross_validate(training_set: str, power: float, data_root=None, seed: int = 0):
    spec = get_spec("ecg_beat")
    beats = beat_dataset(spec, BEAT_TRAINING_SETS[training_set], data_root)
    config = replace(beat_config(EPOCHS["ecg_beat"], seed), class_weight_power=power)
    design = {"training_set": training_set, "class_weight_power": power, "seed": seed}
    folds, truth, predicted = [], [], []
    for held_out in PATIENT_FOLDS:
        test = beats.in_groups(held_out)
        model, _ = fit(spec, beats.subset(~test), config)
        y, guess = beats.y[test], predict(model, beats.x[test]).argmax(1)
        report = metrics.classification_report(y, guess, spec.outputs)
        folds.append({"held_out": list(held_out), "macro_f1_nsv": round(macro_f1(report), 4),
                      **{c: report["per_class"][c] for c in CLASSES_SCORED}})
        truth.append(y)
        predicted.append(guess)
        yield {**design, "folds": folds}
    pooled = metrics.classification_report(np.concatenate(truth), np.concatenate(predicted), spec.outputs)
    fold_f1 = [f["macro_f1_nsv"] for f in folds]
    yield {**design, "folds": folds,
           "pooled": {"macro_f1_nsv": round(macro_f1(pooled), 4),
                      **{c: pooled["per_class"][c] for c in CLASSES_SCORED}},
           "fold_macro_f1_mean": round(float(np.mean(fold_f1)), 4),
           "fold_macro_f1_sd": round(float(np.std(fold_f1, ddof=1)), 4)}


def markdown(rows: list[dict]) -> str:
    lines = ["# The teacher's training design, chosen by 4-fold patient cross-validation on DS1", "",
             ("Every DS1 patient is held out once; DS2 is not touched. Pooled: all 22 patients' held-out beats "
              "together. Class weights proportional to 1/n^power. DS1+SVDB trains on the other DS1 folds and all "
              "65 svdb records."), "",
             "| training set | power | pooled macro-F1 (N,S,V) | fold macro-F1 mean ± sd | S Se | S +P | V Se | V +P "
             "| N Se |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "pooled" not in row:
            lines.append(f"| {row['training_set']} | {row['class_weight_power']} | running: {len(row['folds'])} of "
                         f"{len(PATIENT_FOLDS)} folds | | | | | | |")
            continue
        p = row["pooled"]
        lines.append(f"| {row['training_set']} | {row['class_weight_power']} | {p['macro_f1_nsv']:.3f} | {row['fold_macro_f1_mean']:.3f} ± "
                     f"{row['fold_macro_f1_sd']:.3f} | {p['S']['se']:.3f} | {p['S']['ppv']:.3f} | "
                     f"{p['V']['se']:.3f} | {p['V']['ppv']:.3f} | {p['N']['se']:.3f} |")
    return "\n".join(lines) + "\n"


def save(row: dict) -> None:
    """Put one design's row into the results, re-reading them first: designs may run in parallel processes."""
    path = RESULTS / "teacher_selection.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    key = (row["training_set"], row["class_weight_power"])
    rows = sorted([r for r in rows if (r["training_set"], r["class_weight_power"]) != key] + [row],
                  key=lambda r: (r["training_set"], r["class_weight_power"]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": describe(), "rows": rows}, indent=1) + "\n")
    (RESULTS / "teacher_selection.md").write_text(markdown(rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--design", nargs="+", default=["DS1:0.25", "DS1:0.5", "DS1+SVDB:0.25"],
                        help="training set and class-weight power, e.g. DS1+SVDB:0.25")
    parser.add_argument("--data", default=None)
    args = parser.parse_args(argv)
    for design in args.design:
        training_set, power = design.split(":")
        for row in cross_validate(training_set, float(power), args.data):
            save(row)


if __name__ == "__main__":
    main()
