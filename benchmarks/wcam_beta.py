"""Choose WCAM's beta on DS1's held-out patients (never DS2): structured pruning 0.75, beta 0, 1, 10, 100.

Writes benchmarks/results/wcam_beta.md and .json: the held-out patients' mean N/S/V F1 and the explanation
scores (fidelity to the teacher, localization) of each beta, with the teacher's own localization.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from models.architectures import predict
from models.registry import load_model
from sdk.compress.methods import Plan, run
from sdk.compress.report import explanation_report, explanation_sample, localization
from sdk.training.recipes import beat_score, beat_training_sets

BETAS = (0.0, 1.0, 10.0, 100.0)
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str]) -> None:
    data_root = argv[0] if argv else None
    zoo = load_model("ecg_beat")
    train, validation, _ = beat_training_sets(zoo.spec, data_root)
    beats = explanation_sample(validation)
    score = beat_score(zoo.spec)
    rows = []
    for beta in BETAS:
        model, spec, _, _ = run(Plan("structured", 0.75, wcam_beta=beta), zoo.spec, zoo.model, train, validation)
        rows.append({"beta": beta, "validation_f1_nsv": round(score(validation.y, predict(model, validation.x)), 4),
                     **explanation_report(zoo.model, model, beats, spec.fs)})
    teacher = localization(zoo.model, torch.from_numpy(beats.x), zoo.spec.fs)
    (RESULTS / "wcam_beta.json").write_text(json.dumps({"teacher": teacher, "rows": rows}, indent=1) + "\n")
    lines = ["# WCAM beta, chosen on DS1's held-out patients (118, 124, 220, 223)", "",
             f"Structured pruning, 75% of channels removed, 4 fine-tuning epochs. {rows[0]['beats']} held-out beats "
             f"(up to 250 per class). Teacher's own localization: pointing game {teacher['pointing_game']:.3f}, "
             f"loc AUC {teacher['loc_auc']:.3f}.", "",
             "| beta | mean F1 N/S/V | fidelity cosine | top-10% IoU | pointing game | loc AUC |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['beta']:g} | {r['validation_f1_nsv']:.3f} | {r['fidelity_cosine']:.3f} | {r['fidelity_iou']:.3f} | "
              f"{r['pointing_game']:.3f} | {r['loc_auc']:.3f} |" for r in rows]
    (RESULTS / "wcam_beta.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
