"""Streaming R-peak detector: accuracy on synthetic and MIT-BIH ECG, chunking invariance, latency, errors."""

import os
from pathlib import Path

import numpy as np
import pytest

from sdk.data.rpeak import RPeakDetector, detect_r_peaks, match_peaks
from sdk.errors import HeartSightError

MITDB = Path(os.environ.get("HEARTSIGHT_DATA", "")) / "mitdb"
needs_mitdb = pytest.mark.skipif(not (MITDB / "100.hea").exists(), reason="set HEARTSIGHT_DATA to a directory holding mitdb")
BEAT_SYMBOLS = set("NLRBAaJSVrFejnE/fQ?")


def gaussian(t, centre, width, amplitude):
    return amplitude * np.exp(-0.5 * ((t - centre) / width) ** 2)


def synthetic_ecg(fs, seconds=40.0, seed=0):
    """ECG-like signal in mV: P-QRS-T complexes at 60-100 bpm on a wandering baseline with noise.

    Returns the signal and the sample of each R peak (the apex of the R Gaussian).
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    r_times = np.cumsum(rng.uniform(0.6, 1.0, size=int(seconds)))
    r_times = r_times[r_times < seconds - 0.5] + 0.3
    x = 0.3 * np.sin(2 * np.pi * 0.25 * t) + 0.02 * rng.standard_normal(t.size)
    for r in r_times:
        x += gaussian(t, r - 0.16, 0.025, 0.15) + qrs(t, r) + gaussian(t, r + 0.28, 0.045, 0.35)  # P, QRS, T
    return x, np.round(r_times * fs).astype(np.int64)


def qrs(t, r):
    return gaussian(t, r - 0.025, 0.008, -0.15) + gaussian(t, r, 0.010, 1.2) + gaussian(t, r + 0.025, 0.008, -0.3)


def stream(signal, fs, chunk):
    """Feed the signal in chunks of `chunk` samples; return the peaks and, for each, the samples fed by then."""
    detector = RPeakDetector(fs)
    peaks, fed_by_then = [], []
    for start in range(0, signal.size, chunk):
        found = detector.process(signal[start : start + chunk])
        peaks.append(found)
        fed_by_then.append(np.full(found.size, min(start + chunk, signal.size)))
    found = detector.flush()
    return np.concatenate(peaks + [found]), np.concatenate(fed_by_then + [np.full(found.size, signal.size)])


def mitdb_lead(record):
    from sdk.data.records import read_annotations, read_database_record

    recording = read_database_record("mitdb", record, MITDB.parent)
    annotation = read_annotations("mitdb", record, MITDB.parent)
    beats = np.array([s for s, symbol in zip(annotation.sample, annotation.symbol) if symbol in BEAT_SYMBOLS])
    return recording.channel("MLII"), recording.fs, beats


@pytest.mark.parametrize("fs", [128.0, 360.0, 1000.0])
def test_every_synthetic_beat_is_found_within_10_ms_and_nothing_else(fs):
    ecg, truth = synthetic_ecg(fs)
    peaks = detect_r_peaks(ecg, fs)
    assert peaks.dtype == np.int64
    assert peaks.size == truth.size
    assert np.abs(peaks - truth).max() <= 0.010 * fs


def test_chunking_does_not_change_the_output():
    fs = 360.0
    ecg, _ = synthetic_ecg(fs, seconds=30.0, seed=1)
    ecg[4000:4100] = np.nan  # a dropout must be handled the same way whatever the chunking
    whole, _ = stream(ecg, fs, ecg.size)
    assert whole.size > 25
    for chunk in (1, 37, 1000):
        peaks, _ = stream(ecg, fs, chunk)
        np.testing.assert_array_equal(peaks, whole)
    assert np.all(np.diff(whole) > 0)
    np.testing.assert_array_equal(detect_r_peaks(ecg, fs), whole)


def test_beats_are_confirmed_within_a_third_of_a_second_after_learning():
    fs = 250.0
    ecg, truth = synthetic_ecg(fs, seed=2)
    peaks, fed_by_then = stream(ecg, fs, 1)
    np.testing.assert_array_equal(peaks, detect_r_peaks(ecg, fs))
    after_learning = peaks > 2.5 * fs
    latency = (fed_by_then - peaks)[after_learning] / fs
    assert latency.max() <= 0.35


def test_a_beat_under_the_threshold_is_recovered_by_search_back(monkeypatch):
    """A QRS at 35 % of the usual amplitude has ~12 % of the energy: under the threshold, over half of it."""
    fs = 360.0
    ecg, truth = synthetic_ecg(fs, seed=3)
    t = np.arange(ecg.size) / fs
    ecg -= 0.65 * qrs(t, truth[20] / fs)
    peaks = detect_r_peaks(ecg, fs)
    assert match_peaks(truth, peaks, round(0.01 * fs)) == (truth.size, 0, 0)
    monkeypatch.setattr("sdk.data.rpeak.SEARCH_BACK_RR", 100.0)
    assert match_peaks(truth, detect_r_peaks(ecg, fs), round(0.01 * fs)) == (truth.size - 1, 1, 0)


def test_nan_and_inf_samples_are_filtered_as_zero_without_stopping_detection():
    fs = 360.0
    ecg, truth = synthetic_ecg(fs, seed=4)
    ecg[int(10 * fs) : int(11 * fs)] = np.nan
    ecg[int(20 * fs)] = np.inf
    peaks = detect_r_peaks(ecg, fs)
    later = truth[truth > 12 * fs]
    tp, fn, _ = match_peaks(later, peaks[peaks > 12 * fs], round(0.01 * fs))
    assert (tp, fn) == (later.size, 0)


def test_match_peaks_pairs_one_to_one_closest_first_within_tolerance():
    assert match_peaks([100, 200, 300], [100, 205, 330], 10) == (2, 1, 1)
    assert match_peaks([100], [95, 99], 10) == (1, 0, 1)
    assert match_peaks([100, 112], [110], 10) == (1, 1, 0)  # 112 is closer, so 100 goes unmatched
    assert match_peaks([100], [110], 10) == (1, 0, 0)  # the tolerance is inclusive
    assert match_peaks([], [5], 10) == (0, 0, 1)


def test_short_and_empty_signals_give_no_error():
    assert detect_r_peaks(np.zeros(0), 360.0).size == 0
    assert detect_r_peaks(np.zeros(100), 360.0).size == 0
    ecg, truth = synthetic_ecg(500.0, seconds=1.5)
    assert match_peaks(truth, detect_r_peaks(ecg, 500.0), 5) == (truth.size, 0, 0)


@pytest.mark.parametrize("fs", [0, -360, float("nan"), float("inf"), None, "360", True, 20.0])
def test_bad_sampling_rate_is_a_clear_error(fs):
    with pytest.raises(HeartSightError, match="sampling rate"):
        RPeakDetector(fs)


@pytest.mark.parametrize("chunk", [np.zeros((10, 2)), np.array(["1", "2"]), np.zeros(3, dtype=bool), 1.0])
def test_a_chunk_that_is_not_1d_numbers_is_a_clear_error(chunk):
    with pytest.raises(HeartSightError, match="1-D array of numbers"):
        RPeakDetector(360.0).process(chunk)


def test_feeding_after_flush_is_a_clear_error():
    detector = RPeakDetector(360.0)
    detector.process(np.zeros(10))
    detector.flush()
    with pytest.raises(HeartSightError, match="flushed"):
        detector.process(np.zeros(10))


@needs_mitdb
@pytest.mark.data
@pytest.mark.parametrize("record", ["100", "208"])
def test_mitdb_sensitivity_and_positive_predictivity_reach_99_percent(record):
    ecg, fs, beats = mitdb_lead(record)
    tp, fn, fp = match_peaks(beats, detect_r_peaks(ecg, fs), round(0.15 * fs))
    assert tp / (tp + fn) >= 0.99
    assert tp / (tp + fp) >= 0.99


@needs_mitdb
@pytest.mark.data
def test_mitdb_record_streamed_in_uneven_chunks_matches_offline():
    ecg, fs, _ = mitdb_lead("208")
    ecg = ecg[: int(300 * fs)]
    rng = np.random.default_rng(0)
    cuts = np.cumsum(rng.integers(1, 2000, size=ecg.size // 500))
    detector = RPeakDetector(fs)
    streamed = [detector.process(part) for part in np.split(ecg, cuts[cuts < ecg.size])] + [detector.flush()]
    np.testing.assert_array_equal(np.concatenate(streamed), detect_r_peaks(ecg, fs))
