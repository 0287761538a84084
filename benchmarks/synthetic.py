"""How fast the synthetic signals are made: the demo, the tests and every training set of ppg_hr make them.

Five minutes of ECG at 360 Hz with 5% S and 5% V beats, and the 48 synthetic wrists of a ppg_hr training set
(60 s each at 32 Hz, preprocessed into windows); the median of 5 runs, and as a multiple of real time.

Writes benchmarks/results/synthetic.json and .md. Usage: python -m benchmarks.synthetic
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from benchmarks.machine import describe
from models.registry import get_spec
from sdk.data.datasets import SYNTHETIC_PPG_RECORDINGS, SYNTHETIC_PPG_SECONDS, synthetic_ppg_dataset
from sdk.data.synthetic import synthetic_ecg

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = 5


def seconds(make) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        make()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str]) -> None:
    ecg = seconds(lambda: synthetic_ecg(300, fs=360, ectopic={"S": 0.05, "V": 0.05}))
    wrists = seconds(lambda: synthetic_ppg_dataset(get_spec("ppg_hr")))
    wrist_seconds = SYNTHETIC_PPG_RECORDINGS * SYNTHETIC_PPG_SECONDS
    result = {"machine": describe(), "runs": RUNS,
              "ecg_300s_360hz": {"seconds": round(ecg, 3), "times_real_time": round(300 / ecg, 1)},
              "ppg_hr_synthetic_wrists": {"recordings": SYNTHETIC_PPG_RECORDINGS, "seconds": round(wrists, 3),
                                          "times_real_time": round(wrist_seconds / wrists, 1)}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "synthetic.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["# Synthetic signals: generation speed", "", f"Median of {RUNS} runs. Machine: {result['machine']}.", "",
             "| signal | seconds | × real time |", "|---|---|---|",
             f"| ECG, 300 s at 360 Hz, 5% S and 5% V | {ecg:.3f} | {300 / ecg:.0f} |",
             f"| {SYNTHETIC_PPG_RECORDINGS} synthetic wrists of {SYNTHETIC_PPG_SECONDS:.0f} s, preprocessed into ppg_hr "
             f"windows | {wrists:.3f} | {wrist_seconds / wrists:.0f} |"]
    (RESULTS / "synthetic.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main([])
