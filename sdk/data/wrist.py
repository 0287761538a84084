"""Wrist PPG During Exercise (Jarchi & Casson 2017): wrist PPG + accelerometer with chest-ECG reference beats."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from sdk.data.records import database_path, read_annotations, read_database_record
from sdk.errors import HeartSightError

CHANNELS = ("wrist_ppg", "wrist_accel_lownoise_x", "wrist_accel_lownoise_y", "wrist_accel_lownoise_z")


@dataclass(frozen=True)
class WristSession:
    name: str  # e.g. "s3_run"
    subject: str  # e.g. "s3"
    fs: float
    ppg_and_accel: np.ndarray  # (samples, 4): PPG, accel x, y, z
    r_peaks: np.ndarray  # chest-ECG R peaks (sample indices)


def session_names(data_root: str | os.PathLike | None = None) -> tuple[str, ...]:
    listing = database_path("wrist", data_root) / "RECORDS"
    if not listing.exists():
        raise HeartSightError(
            f"the wrist PPG database is not in {listing.parent} (no RECORDS file); "
            "get it with `heartsight data fetch wrist` or point --data-dir at it"
        )
    return tuple(line.strip() for line in listing.read_text().splitlines() if line.strip())


def load_session(name: str, data_root: str | os.PathLike | None = None) -> WristSession:
    recording = read_database_record("wrist", name, data_root)
    annotation = read_annotations("wrist", name, data_root)
    signals = np.stack([recording.channel(c) for c in CHANNELS], axis=1)
    # Several recordings end in a stretch of missing samples (NaN): keep what precedes the first one.
    finite = np.isfinite(signals).all(axis=1)
    length = len(signals) if finite.all() else int(np.argmin(finite))
    r_peaks = np.asarray(annotation.sample, dtype=np.int64)
    return WristSession(name, name.split("_")[0], recording.fs, signals[:length], r_peaks[r_peaks < length])


def reference_heart_rate(session: WristSession, starts: np.ndarray, length: float) -> np.ndarray:
    """Mean heart rate (bpm) of the chest-ECG R-R intervals inside each window (mean_heart_rate)."""
    return mean_heart_rate(session.r_peaks, starts, length, session.fs)


def mean_heart_rate(beats: np.ndarray, starts: np.ndarray, length: float, fs: float) -> np.ndarray:
    """Mean heart rate (bpm) of the R-R intervals between the beats (samples at fs) inside each window; NaN where
    fewer than 3 beats lie in it."""
    rates = np.full(len(starts), np.nan)
    for i, start in enumerate(starts):
        inside = beats[(beats >= start) & (beats < start + length)]
        if len(inside) >= 3:
            rates[i] = 60.0 * (len(inside) - 1) / ((inside[-1] - inside[0]) / fs)
    return rates
