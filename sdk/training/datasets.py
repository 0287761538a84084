"""Labelled model inputs from the real databases, built with the same preprocessing the device runs."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from models.registry import ModelSpec
from sdk.data import mitdb, preprocess, wrist
from sdk.data.records import resample, resampled_index


@dataclass
class Dataset:
    x: np.ndarray  # (n, channels, window) float32
    y: np.ndarray  # class index (int64) or target value (float32)
    group: np.ndarray  # record or subject each example comes from: the unit of every split

    def subset(self, keep: np.ndarray) -> "Dataset":
        return Dataset(self.x[keep], self.y[keep], self.group[keep])

    def in_groups(self, groups) -> np.ndarray:
        return np.isin(self.group, list(groups))


def mitdb_tracks(record: mitdb.MitdbRecord, fs: float, r_peaks_at_record_fs: np.ndarray) -> preprocess.EcgTracks:
    ecg = resample(record.ecg, record.fs, fs)
    r_peaks = np.clip(resampled_index(r_peaks_at_record_fs, record.fs, fs), 0, len(ecg) - 1)
    return preprocess.ecg_tracks(ecg, r_peaks, fs)


def beat_dataset(spec: ModelSpec, records, data_root: str | os.PathLike | None = None) -> Dataset:
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


def af_dataset(spec: ModelSpec, records, data_root: str | os.PathLike | None = None,
               r_peaks_of=None) -> Dataset:
    """Consecutive windows labelled AF when at least half of the window lies in an AFIB/AFL episode.

    r_peaks_of(record) gives the R peaks at the record's rate; by default the reference beat annotations.
    """
    xs, ys, groups = [], [], []
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
    return Dataset(np.concatenate(xs), np.concatenate(ys), np.concatenate(groups))


def ppg_dataset(spec: ModelSpec, recordings, data_root: str | os.PathLike | None = None) -> Dataset:
    """8-s windows every 2 s with the chest-ECG reference heart rate; grouped by subject."""
    xs, ys, groups = [], [], []
    for name in tqdm(recordings, desc="ppg windows", unit="recording", leave=False):
        session = wrist.load_session(name, data_root)
        signals = resample(session.ppg_and_accel, session.fs, spec.fs)
        starts = np.arange(0, len(signals) - spec.window + 1, spec.hop)
        samples_per_model_sample = session.fs / spec.fs
        hr = wrist.reference_heart_rate(session, starts * samples_per_model_sample, spec.window * samples_per_model_sample)
        keep = np.isfinite(hr)
        xs.append(preprocess.ppg_windows(signals, starts[keep], spec.window))
        ys.append(hr[keep].astype(np.float32))
        groups.append(np.full(int(keep.sum()), session.subject))
    return Dataset(np.concatenate(xs), np.concatenate(ys), np.concatenate(groups))
