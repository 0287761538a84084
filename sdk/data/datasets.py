"""Labelled model inputs from the real databases, built with the same preprocessing the device runs.

`spec` arguments are models.registry.ModelSpec objects (anything with fs, window, hop, task and is_classifier):
the data comes before the models on the data path, so this module does not import them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from sdk.data import afdb, mitdb, preprocess, rr_features, wrist
from sdk.data.records import resample, resampled_index
from sdk.data.synthetic_ppg import synthetic_ppg
from sdk.errors import HeartSightError


@dataclass
class Dataset:
    x: np.ndarray  # (n, channels, window) float32
    y: np.ndarray  # class index (int64) or target value (float32)
    group: np.ndarray  # record or subject each example comes from: the unit of every split
    # rhythm windows: RR features (rr_features.FEATURES) of the beats up to each window's end; NaN where too few
    rr: np.ndarray | None = None
    # heart-rate windows: the recording each comes from (its windows are consecutive, in order, hop apart)
    recording: np.ndarray | None = None

    def subset(self, keep: np.ndarray) -> "Dataset":
        return Dataset(self.x[keep], self.y[keep], self.group[keep], None if self.rr is None else self.rr[keep],
                       None if self.recording is None else self.recording[keep])

    def in_groups(self, groups) -> np.ndarray:
        return np.isin(self.group, list(groups))

    def extended(self, other: "Dataset") -> "Dataset":
        """This dataset's examples, then other's (neither has RR features)."""
        if self.rr is not None or other.rr is not None:
            raise HeartSightError("datasets with RR features are not joined: their windows are built together")
        recording = None if self.recording is None else np.concatenate([self.recording, other.recording])
        return Dataset(np.concatenate([self.x, other.x]), np.concatenate([self.y, other.y]),
                       np.concatenate([self.group, other.group]), recording=recording)


def mitdb_tracks(record: mitdb.MitdbRecord, fs: float, r_peaks_at_record_fs: np.ndarray) -> preprocess.EcgTracks:
    ecg = resample(record.ecg, record.fs, fs)
    r_peaks = np.clip(resampled_index(r_peaks_at_record_fs, record.fs, fs), 0, len(ecg) - 1)
    return preprocess.ecg_tracks(ecg, r_peaks, fs)


def beat_dataset(spec, records, data_root: str | os.PathLike | None = None) -> Dataset:
    """Every AAMI-scored beat of the records, at its reference annotation (the literature's protocol)."""
    xs, ys, groups = [], [], []
    for name in tqdm(records, desc="beats", unit="record", leave=False):
        record = mitdb.load_record(name, data_root)
        tracks = mitdb_tracks(record, spec.fs, record.beat_samples)
        labels = record.aami_labels
        scored = np.flatnonzero(labels >= 0)
        xs.append(preprocess.beat_windows(tracks, scored, spec.window))
        ys.append(labels[scored])
        groups.append(np.full(len(scored), name))
    return Dataset(np.concatenate(xs), np.concatenate(ys), np.concatenate(groups))


def af_dataset(spec, records, data_root: str | os.PathLike | None = None,
               r_peaks_of=None, ectopic_of=None) -> Dataset:
    """Consecutive windows labelled AF when at least half of the window lies in an AFIB/AFL episode.

    r_peaks_of(record) gives the R peaks at the record's rate; by default the reference beat annotations.
    ectopic_of(tracks) flags the beats whose intervals the RR features leave out (models.rr_af.ectopic_beats).
    """
    xs, ys, groups, rrs = [], [], [], []
    for name in tqdm(records, desc="rhythm windows", unit="record", leave=False):
        record = mitdb.load_record(name, data_root)
        peaks = record.beat_samples if r_peaks_of is None else r_peaks_of(record)
        tracks = mitdb_tracks(record, spec.fs, peaks)
        starts = np.arange(0, len(tracks.filtered) - spec.window + 1, spec.hop)
        af = resample(record.af.astype(np.float32), record.fs, spec.fs) > 0.5
        af_fraction = np.array([af[s: s + spec.window].mean() for s in starts])
        xs.append(preprocess.rhythm_windows(tracks, starts, spec.window))
        ys.append((af_fraction >= 0.5).astype(np.int64))
        groups.append(np.full(len(starts), name))
        features, usable = rr_features.window_features(tracks.context.r_peaks / spec.fs, (starts + spec.window) / spec.fs,
                                                       None if ectopic_of is None else ectopic_of(tracks))
        rrs.append(np.where(usable[:, None], features, np.nan).astype(np.float32))
    return Dataset(np.concatenate(xs), np.concatenate(ys), np.concatenate(groups), np.concatenate(rrs))


def rr_windows(beat_times_s: np.ndarray, duration_s: float, window_s: float, af_share,
               ectopic: np.ndarray | None = None) -> dict:
    """Back-to-back windows of a beat list: x, their RR features (the usable ones), y, AF when af_share(start, end)
    is at least 0.5, and how many windows had too few intervals to judge (`unusable`)."""
    ends = window_s * np.arange(1, int(duration_s // window_s) + 1)
    features, usable = rr_features.window_features(beat_times_s, ends, ectopic)
    return {"x": features[usable], "y": np.array([af_share(end - window_s, end) >= 0.5 for end in ends[usable]], bool),
            "unusable": int((~usable).sum())}


AFDB_AF_GRID_S = 0.1  # an afdb window's AF share is sampled on this grid


def afdb_rr_windows(window_s: float, data_root: str | os.PathLike | None = None) -> dict[str, dict]:
    """rr_windows of every MIT-BIH AF Database record, by "afdb/NAME"."""
    windows = {}
    for name in tqdm(afdb.RECORDS, desc="afdb", unit="record", leave=False):
        record = afdb.load_record(name, data_root)
        windows[f"afdb/{name}"] = rr_windows(record.beat_times_s, float(record.beat_times_s[-1]), window_s,
                                             lambda a, b: record.af_at(np.arange(a, b, AFDB_AF_GRID_S)).mean())
    return windows


def ppg_dataset(spec, recordings, data_root: str | os.PathLike | None = None) -> Dataset:
    """8-s windows every 2 s with the chest-ECG reference heart rate (NaN where the chest ECG has too few beats: a
    tracker still steps over them); grouped by subject."""
    xs, ys, groups, sessions = [], [], [], []
    for name in tqdm(recordings, desc="ppg windows", unit="recording", leave=False):
        session = wrist.load_session(name, data_root)
        signals = resample(session.ppg_and_accel, session.fs, spec.fs)
        starts = np.arange(0, len(signals) - spec.window + 1, spec.hop)
        samples_per_model_sample = session.fs / spec.fs
        hr = wrist.reference_heart_rate(session, starts * samples_per_model_sample, spec.window * samples_per_model_sample)
        xs.append(preprocess.ppg_windows(signals, starts, spec.window))
        ys.append(hr.astype(np.float32))
        groups.append(np.full(len(starts), session.subject))
        sessions.append(np.full(len(starts), name))
    return Dataset(np.concatenate(xs), np.concatenate(ys), np.concatenate(groups), recording=np.concatenate(sessions))


SYNTHETIC_PPG_GROUP = "synthetic"  # wrists of sdk.data.synthetic_ppg: trained on, never scored
SYNTHETIC_PPG_RECORDINGS = 48
SYNTHETIC_PPG_SECONDS = 60.0


def synthetic_ppg_dataset(spec, recordings: int = SYNTHETIC_PPG_RECORDINGS, seed: int = 0) -> Dataset:
    """Windows of synthetic wrists at rates spread evenly over 40-200 bpm, preprocessed as the recordings are, with
    the reference rate from the exact beat times. Half are still, with accelerometer noise from none (a PPG-only
    input) to 0.5 m/s^2 (flat, without motion's peaks); half move at a step rate drawn apart from the heart rate."""
    rng = np.random.default_rng(seed)
    xs, ys, names = [], [], []
    for k in range(recordings):
        recording = synthetic_ppg(SYNTHETIC_PPG_SECONDS, spec.fs, heart_rate=40 + 160 * (k + rng.uniform()) / recordings,
                                  heart_rate_std=rng.uniform(1, 4), noise=rng.uniform(0.02, 0.3),
                                  accel_noise=0.0 if k % 4 == 0 else 10 ** rng.uniform(-2.3, -0.3),
                                  motion_spm=rng.uniform(60, 180) if k % 2 else 0.0, motion_ms2=10 ** rng.uniform(-0.3, 1),
                                  motion_leak=rng.uniform(0.2, 2.0), seed=seed * 1000 + k)
        starts = np.arange(0, len(recording.signals) - spec.window + 1, spec.hop)
        xs.append(preprocess.ppg_windows(recording.signals, starts, spec.window))
        ys.append(wrist.mean_heart_rate(recording.beat_times_s * spec.fs, starts, spec.window, spec.fs).astype(np.float32))
        names.append(np.full(len(starts), f"{SYNTHETIC_PPG_GROUP}{k}"))
    return Dataset(np.concatenate(xs), np.concatenate(ys), np.full(sum(map(len, ys)), SYNTHETIC_PPG_GROUP),
                   recording=np.concatenate(names))


CALIBRATION_WINDOWS = 2048  # training windows an int8 export calibrates its activation ranges on
AF_CALIBRATION_RECORDS = ("201", "203", "106", "119")  # two AF and two non-AF DS1 records
AF_TEST_RECORDS = ("202", "219", "221", "100")  # DS2


def sample_windows(spec, purpose: str, data_root, n: int, seed: int = 0) -> np.ndarray:
    """n model inputs: training windows for calibration ("calibration"), held-out ones for tests ("test");
    for classifiers every class is represented, the rare ones fully when they are few."""
    if spec.task == "beat":
        dataset = beat_dataset(spec, mitdb.DS1 if purpose == "calibration" else mitdb.DS2, data_root)
    elif spec.task == "rhythm":
        dataset = af_dataset(spec, AF_CALIBRATION_RECORDS if purpose == "calibration" else AF_TEST_RECORDS, data_root)
    else:
        sessions = wrist.session_names(data_root)
        half = len(sessions) // 2
        dataset = ppg_dataset(spec, sessions[:half] if purpose == "calibration" else sessions[half:], data_root)
    rng = np.random.default_rng(seed)
    if spec.is_classifier:
        classes = np.unique(dataset.y)
        chosen = np.concatenate([rng.permutation(np.flatnonzero(dataset.y == k))[: max(1, n // len(classes))] for k in classes])
    else:
        chosen = rng.permutation(len(dataset.y))[:n]
    return dataset.x[np.sort(chosen)]


def calibration_description(spec, n: int = CALIBRATION_WINDOWS) -> str:
    """Where sample_windows(spec, "calibration", ...) draws from, for the int8 model's record of its calibration."""
    source = {"beat": "MIT-BIH DS1 beats at the reference annotations, every class represented",
              "rhythm": f"MIT-BIH records {', '.join(AF_CALIBRATION_RECORDS)}, rhythm windows",
              "hr": "the first half of the Wrist PPG During Exercise sessions"}[spec.task]
    return f"up to {n} windows (seed 0): {source}"
