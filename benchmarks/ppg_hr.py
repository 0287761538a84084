"""Wrist heart rate under motion: the classical tracker against ppg_hr, on subjects each fold never saw.

Both read the same inputs (8-s spectra every 2 s, sdk.data.preprocess.ppg_spectra) and are tracked alike
(models.heart_rate.HeartRateTracker); they differ only in the scores over heart rates:
- classical: the PPG's spectral peaks with the accelerometer's motion cancelled (models.heart_rate.spectral_peak_scores);
- ppg_hr: the class activation map of each leave-one-subject-out fold model, float (torch) and its int8 C library.
MAE against the chest-ECG reference rate, pooled, per subject, per recording and per activity; and a plot of every
recording's tracked rates.

Writes benchmarks/results/ppg_hr.json, .md and .png. Usage: python -m benchmarks.ppg_hr [DATA_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.machine import describe  # noqa: E402
from models.heart_rate import spectral_peak_scores, tracked_heart_rates  # noqa: E402
from models.registry import get_spec, load_fold, load_model  # noqa: E402
from sdk.device.backends import evaluate  # noqa: E402
from sdk.explain import ClassActivationMap  # noqa: E402
from sdk.training.recipes import cross_validation_folds, heart_rate_score  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str]) -> None:
    data_root = argv[0] if argv else None
    spec = get_spec("ppg_hr")
    dataset, folds, protocol = cross_validation_folds(spec, data_root)
    card = load_model("ppg_hr").card
    classical = heart_rate_score(dataset, card, lambda fold: spectral_peak_scores, protocol, "numpy")
    rows = {"classical tracker (spectral peaks, accelerometer cancellation)": classical,
            "ppg_hr (float)": evaluate("ppg_hr", "torch", data_root=data_root),
            "ppg_hr (int8, C library)": evaluate("ppg_hr", "c", data_root=data_root)}
    result = {"machine": describe(), "protocol": protocol, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ppg_hr.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "ppg_hr.md").write_text(markdown(result))
    plot(dataset, card, RESULTS / "ppg_hr.png")
    print(markdown(result))


def markdown(result: dict) -> str:
    rows = result["rows"]
    first = next(iter(rows.values()))
    subjects = [fold["held_out"][0] for fold in first["folds"]]
    lines = ["# Wrist heart rate: classical tracker against ppg_hr (leave-one-subject-out)", "",
             f"{result['protocol']}; MAE in bpm against the chest-ECG rate, {first['pooled']['n']} windows of 8 s every "
             f"2 s, tracked causally through each recording. Machine: {result['machine']}.", "",
             "| scores | pooled MAE | RMSE | untracked MAE | walk | run | bike | " + " | ".join(subjects) + " |",
             "|---|---|---|---|---|---|---|" + "---|" * len(subjects)]
    for label, row in rows.items():
        activity = " | ".join(f"{row['activities'][a]['mae_bpm']:.1f}" for a in ("walk", "run", "bike"))
        per_subject = " | ".join(f"{fold['mae_bpm']:.1f}" for fold in row["folds"])
        lines.append(f"| {label} | {row['pooled']['mae_bpm']:.1f} | {row['pooled']['rmse_bpm']:.1f} | "
                     f"{row['untracked']['mae_bpm']:.1f} | {activity} | {per_subject} |")
    lines += ["", "Per recording (MAE, bpm):", "", "| recording | " + " | ".join(rows) + " |",
              "|---|" + "---|" * len(rows)]
    for name in first["recordings"]:
        lines.append(f"| {name} | " + " | ".join(f"{row['recordings'][name]['mae_bpm']:.1f}" for row in rows.values())
                     + " |")
    return "\n".join(lines) + "\n"


def plot(dataset, card: dict, path: Path) -> None:
    """Every recording: the reference rate, the classical tracker's and the float model's (its fold's)."""
    zoo = load_model("ppg_hr")
    names = list(dict.fromkeys(dataset.recording.tolist()))
    figure, axes = plt.subplots(4, 4, figsize=(16, 12), sharey=True)
    for axis, name in zip(axes.flat, names):
        rows = np.flatnonzero(dataset.recording == name)
        fold = next(k for k, f in enumerate(card["folds"]) if dataset.group[rows[0]] in f["held_out"])
        traces = ClassActivationMap(load_fold(zoo, fold).model).attribute(torch.from_numpy(dataset.x[rows]), 0).numpy()
        t = 2.0 * np.arange(len(rows))
        axis.plot(t, dataset.y[rows], color="black", label="chest ECG")
        axis.plot(t, tracked_heart_rates(spectral_peak_scores(dataset.x[rows])), color="grey", alpha=0.7,
                  label="classical")
        axis.plot(t, tracked_heart_rates(traces), color="tab:red", label="ppg_hr")
        axis.set_title(name, fontsize=9)
    axes.flat[0].legend(fontsize=8)
    figure.supxlabel("time (s)")
    figure.supylabel("heart rate (bpm)")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


if __name__ == "__main__":
    main(sys.argv[1:])
