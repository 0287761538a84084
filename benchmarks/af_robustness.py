"""ecg_af when recordings come as other devices give them: other sampling rates, short excerpts, added noise.

Each MIT-BIH record goes through the whole device path (`sdk.device.analyze`: resampling, R-peak detection,
windows, model) with the fold model that never saw it (ecg_af's leave-records-out folds), first as recorded
(360 Hz, whole), then changed one way at a time:
- resampled to 128, 200, 250 and 300 Hz;
- cut into back-to-back 10-, 30- and 60-s excerpts, each analysed on its own (as a handheld recorder gives them);
- with baseline wander (0.15-0.3 Hz), muscle noise (white noise band-passed 20-100 Hz) or electrode motion
  (0.5-3 Hz bursts of 2 s every 10 s) added at 6 dB signal-to-noise ratio (MIT-BIH Noise Stress Test levels).
A window is AF when at least half of its span lies in an AFIB or AFL episode; gated windows are counted apart.
One more row scores the shipped model (trained on every MIT-BIH record) on synthetic recordings it never saw
(sdk.data.synthetic: SYNTHETIC_RECORDINGS of 5 min at 250 Hz, each with a 3-min AF episode, irregular RR without P
waves, between sinus rhythm at 55-110 bpm, half of them with 5% ventricular ectopic beats).

Writes benchmarks/results/af_robustness.json and .md. Usage: python -m benchmarks.af_robustness [DATA_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfiltfilt
from tqdm import tqdm

from benchmarks.machine import describe
from models.registry import load_fold, load_model
from sdk.data import mitdb
from sdk.data.records import Recording, resample
from sdk.data.synthetic import synthetic_ecg
from sdk.device.analyze import analyze
from sdk.training import metrics

RESULTS = Path(__file__).resolve().parent / "results"
RATES_HZ = (128, 200, 250, 300)
EXCERPTS_S = (10, 30, 60)
NOISES = ("baseline wander", "muscle", "electrode motion")
SNR_DB = 6.0
TARGET_GAP = 0.05  # every row within this F1 of the clean one
SYNTHETIC_RECORDINGS, SYNTHETIC_FS, SYNTHETIC_AF_S = 10, 250.0, (60.0, 240.0)
SYNTHETIC_ROW = "synthetic AF episodes (never seen)"


def synthetic_recordings():
    """(recording, AF at times) of the synthetic row."""
    for seed in range(SYNTHETIC_RECORDINGS):
        ecg = synthetic_ecg(300, SYNTHETIC_FS, heart_rate=55 + 55 * seed / (SYNTHETIC_RECORDINGS - 1),
                            noise_mv=0.02 + 0.01 * (seed % 3), ectopic={"V": 0.05} if seed % 2 else None, seed=seed,
                            af_episodes=(SYNTHETIC_AF_S,))
        yield Recording(f"synthetic{seed}", SYNTHETIC_FS, ecg.signal[:, None], ("MLII",)), ecg.af_at


def noise(kind: str, n: int, fs: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / fs
    if kind == "baseline wander":
        return sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in rng.uniform(0.15, 0.3, 2))
    if kind == "muscle":
        return sosfiltfilt(butter(4, (20, min(100, 0.45 * fs)), "bandpass", fs=fs, output="sos"), rng.normal(size=n))
    bursts = (np.floor(t / 2) % 5 == 0).astype(float)  # 2 s of every 10 s
    low = sosfiltfilt(butter(2, (0.5, 3), "bandpass", fs=fs, output="sos"), rng.normal(size=n))
    return low * bursts


def with_noise(ecg: np.ndarray, kind: str, fs: float, seed: int) -> np.ndarray:
    added = noise(kind, len(ecg), fs, np.random.default_rng(seed))
    signal_power, noise_power = np.var(ecg), np.var(added) + 1e-12
    return ecg + added * np.sqrt(signal_power / noise_power / 10 ** (SNR_DB / 10))


def variants(record: mitdb.MitdbRecord):
    """(row name, [(recording, offset in seconds)]) for the record as recorded and changed one way at a time."""
    ecg, fs = record.ecg, record.fs
    yield "clean (360 Hz, whole)", [(Recording(record.name, fs, ecg[:, None], ("MLII",)), 0.0)]
    for rate in RATES_HZ:
        yield f"resampled to {rate} Hz", [(Recording(record.name, rate, resample(ecg, fs, rate)[:, None], ("MLII",)), 0.0)]
    for seconds in EXCERPTS_S:
        step = int(seconds * fs)
        yield f"{seconds}-s excerpts", [(Recording(record.name, fs, ecg[a: a + step, None], ("MLII",)), a / fs)
                                        for a in range(0, len(ecg) - step + 1, step)]
    for k, kind in enumerate(NOISES):
        noisy = with_noise(ecg, kind, fs, seed=int(record.name) * 10 + k)
        yield f"{kind}, {SNR_DB:g} dB SNR", [(Recording(record.name, fs, noisy[:, None], ("MLII",)), 0.0)]


def main(argv: list[str]) -> None:
    data_root = argv[0] if argv else None
    zoo = load_model("ecg_af")
    folds = zoo.card["folds"]
    truth, decided, gated = {}, {}, {}
    for k, fold in enumerate(tqdm(folds, desc="folds", unit="fold")):
        model = load_fold(zoo, k)
        for name in fold["held_out"]:
            record = mitdb.load_record(name, data_root)
            for row, parts in variants(record):
                for recording, offset in parts:
                    for window in analyze(recording, model)["windows"]:
                        if window["label"] is None:
                            gated[row] = gated.get(row, 0) + 1
                            continue
                        a, b = (int((offset + window[k]) * record.fs) for k in ("start_s", "end_s"))
                        truth.setdefault(row, []).append(record.af[a: min(b, len(record.af))].mean() >= 0.5)
                        decided.setdefault(row, []).append(window["label"] == "AF")
    for recording, af_at in tqdm(synthetic_recordings(), total=SYNTHETIC_RECORDINGS, desc="synthetic", unit="recording"):
        for window in analyze(recording, zoo)["windows"]:
            if window["label"] is None:
                gated[SYNTHETIC_ROW] = gated.get(SYNTHETIC_ROW, 0) + 1
                continue
            truth.setdefault(SYNTHETIC_ROW, []).append(af_at(np.arange(window["start_s"], window["end_s"], 0.1)).mean() >= 0.5)
            decided.setdefault(SYNTHETIC_ROW, []).append(window["label"] == "AF")
    rows = {}
    for row in truth:
        report = metrics.classification_report(np.array(truth[row], int), np.array(decided[row], int), ("non-AF", "AF"))
        rows[row] = {**report["per_class"]["AF"], "windows": len(truth[row]), "gated": gated.get(row, 0)}
    clean = rows["clean (360 Hz, whole)"]["f1"]
    for row in rows.values():
        row["f1_minus_clean"] = round(row["f1"] - clean, 4)
    result = {"machine": describe(), "model": "ecg_af", "sha256": zoo.card.get("sha256"), "target_gap": TARGET_GAP,
              "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "af_robustness.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "af_robustness.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    lines = ["# ecg_af as other devices record: rates, excerpts, noise (leave-records-out, every MIT-BIH record)", "",
             f"Machine: {result['machine']}. Target: every row within {result['target_gap']} F1 of the clean row. "
             "Gated windows are those the signal-quality gate declares unreadable: they get no diagnosis and are not "
             "scored, so a row with many of them is scored on fewer windows than the clean row.", "",
             "| recordings | windows scored | gated | AF Se | AF +P | AF F1 | F1 − clean | within target |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in result["rows"].items():
        lines.append(f"| {name} | {row['windows']} | {row['gated']} | {row['se']:.3f} | {row['ppv']:.3f} | "
                     f"{row['f1']:.3f} | {row['f1_minus_clean']:+.3f} | "
                     f"{'yes' if abs(row['f1_minus_clean']) <= result['target_gap'] else 'no'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
