"""The RR-only AF baseline (models.rr_af on sdk.data.rr_features) against ecg_af, on patients it never saw.

Windows are ecg_af's: 10 s, back to back, AF when at least half lies in an AFIB or AFL episode; MIT-BIH beats come
from HeartSight's own R-peak detector, as on the device. Each protocol is run twice: on every RR interval, and
without the intervals that touch a beat the zoo's beat model (ecg_beat, as the device runs it on every beat)
calls V or F. ecg_beat was trained on DS1, so for DS1 records its labels are better than on a new patient; the
AF Database has no signal, so its intervals are never filtered. Three protocols:
- MIT-BIH leave-records-out with ecg_af's 7 folds, trained on the other MIT-BIH records;
- the same folds, trained on the other MIT-BIH records and the 25 MIT-BIH AF Database patients;
- trained on the AF Database alone and scored on every MIT-BIH record: a database it never saw.
Windows with fewer than rr_features.MIN_INTERVALS intervals in their context cannot be judged; they are counted,
not scored.

Writes benchmarks/results/af_rr_baseline.json and .md. Usage: python -m benchmarks.af_rr_baseline [DATA_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.machine import describe
from models.architectures import predict
from models.registry import ZOO_DIR, load_model
from models.rr_af import fit_rr_logistic
from sdk.data import mitdb, preprocess, rr_features
from sdk.data.datasets import afdb_rr_windows, mitdb_tracks, rr_windows
from sdk.training import metrics
from sdk.training.recipes import AF_RECORDS, af_folds, detected_r_peaks

RESULTS = Path(__file__).resolve().parent / "results"
WINDOW_S = 10.0  # ecg_af's window and hop


def ventricular_beats(record: mitdb.MitdbRecord, peaks: np.ndarray, beat_model) -> np.ndarray:
    """The beats the beat model calls V or F, from the device's own preprocessing of the detected beats."""
    spec = beat_model.spec
    inputs = preprocess.beat_windows(mitdb_tracks(record, spec.fs, peaks), np.arange(len(peaks)), spec.window)
    return np.isin(predict(beat_model.model, inputs).argmax(1), [spec.outputs.index("V"), spec.outputs.index("F")])


def mitdb_windows(name: str, data_root, beat_model) -> tuple[dict, dict]:
    """(every interval, without the intervals at the beat model's V and F beats)."""
    record = mitdb.load_record(name, data_root)
    peaks = detected_r_peaks(record)
    share = lambda a, b: record.af[int(a * record.fs): int(b * record.fs)].mean()  # noqa: E731
    duration = len(record.ecg) / record.fs
    return (rr_windows(peaks / record.fs, duration, WINDOW_S, share),
            rr_windows(peaks / record.fs, duration, WINDOW_S, share, ventricular_beats(record, peaks, beat_model)))


def predict_af(model, x: np.ndarray) -> np.ndarray:
    return predict(model, x).argmax(1).astype(bool)


def score(truth: dict[str, np.ndarray], predicted: dict[str, np.ndarray]) -> dict:
    def af_scores(y, p):
        report = metrics.classification_report(y.astype(np.int64), p.astype(np.int64), ("non-AF", "AF"))
        return report["per_class"]["AF"]
    names = sorted(truth)
    pooled = af_scores(np.concatenate([truth[n] for n in names]), np.concatenate([predicted[n] for n in names]))
    per_af_record = {n: af_scores(truth[n], predicted[n])["f1"] for n in names if n in AF_RECORDS}
    false_af = {n: int((predicted[n] & ~truth[n]).sum()) for n in names if (predicted[n] & ~truth[n]).sum()}
    return {"pooled": pooled, "per_af_record_f1": per_af_record, "false_af_windows": false_af}


def stacked(parts: dict[str, dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    names = sorted(parts)
    return (np.concatenate([parts[n]["x"] for n in names]), np.concatenate([parts[n]["y"] for n in names]),
            np.concatenate([np.full(len(parts[n]["y"]), n) for n in names]))


def main(argv: list[str]) -> None:
    data_root = argv[0] if argv else None
    beat_model = load_model("ecg_beat")
    both = {n: mitdb_windows(n, data_root, beat_model) for n in tqdm(mitdb.SPLITS["ALL"], desc="mitdb", unit="record")}
    af_db = afdb_rr_windows(WINDOW_S, data_root)
    rows, unusable = {}, {}
    for variant, k in (("every interval", 0), ("V and F beats left out", 1)):
        mit = {n: w[k] for n, w in both.items()}
        truth = {n: w["y"] for n, w in mit.items()}
        unusable[variant] = int(sum(w["unusable"] for w in mit.values()))
        for label, extra in (("MIT-BIH folds, trained on MIT-BIH", {}),
                             ("MIT-BIH folds, trained on MIT-BIH + AFDB", af_db)):
            predicted = {}
            for fold in af_folds():
                model = fit_rr_logistic(*stacked({**{n: w for n, w in mit.items() if n not in fold}, **extra}))
                predicted.update({n: predict_af(model, mit[n]["x"]) for n in fold})
            rows[f"{label}; {variant}"] = score(truth, predicted)
        external = fit_rr_logistic(*stacked(af_db))
        rows[f"trained on AFDB only, every MIT-BIH record; {variant}"] = score(
            truth, {n: predict_af(external, w["x"]) for n, w in mit.items()})
    ecg_af = json.loads((ZOO_DIR / "ecg_af" / "card.json").read_text())["metrics"]["cross_validation"]
    result = {"machine": describe(), "features": list(rr_features.FEATURES), "context_beats": rr_features.CONTEXT_BEATS,
              "windows_scored": int(sum(len(w[0]["y"]) for w in both.values())),
              "windows_unusable": unusable, "rows": rows,
              "ecg_af": {"pooled": ecg_af["pooled"],
                         "per_af_record_f1": {f["held_out"][0]: f["af_record"]["f1"] for f in ecg_af["folds"]}}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "af_rr_baseline.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "af_rr_baseline.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    lines = ["# RR-only AF baseline against ecg_af (10-s windows, patients never seen)", "",
             f"Features ({', '.join(result['features'])}) over the last {result['context_beats']} RR intervals; "
             f"{result['windows_scored']} MIT-BIH windows scored with every interval; too short of intervals to judge: "
             + ", ".join(f"{v} ({k})" for k, v in result["windows_unusable"].items())
             + f". Machine: {result['machine']}.", "",
             "| model, protocol | AF Se | AF +P | AF F1 | per AF record F1 (" + ", ".join(AF_RECORDS) + ") |",
             "|---|---|---|---|---|"]
    rows = {**{f"rr_af: {k}": v for k, v in result["rows"].items()},
            "ecg_af (zoo: RR evidence + network): MIT-BIH folds": result["ecg_af"]}
    for label, row in rows.items():
        p = row["pooled"]
        per = ", ".join(f"{row['per_af_record_f1'].get(r, float('nan')):.2f}" for r in AF_RECORDS)
        lines.append(f"| {label} | {p['se']:.3f} | {p['ppv']:.3f} | {p['f1']:.3f} | {per} |")
    worst = {k: dict(sorted(v["false_af_windows"].items(), key=lambda kv: -kv[1])[:6]) for k, v in result["rows"].items()}
    lines += ["", "Records with the most false AF windows (rr_af): " + "; ".join(f"{k}: {v}" for k, v in worst.items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
