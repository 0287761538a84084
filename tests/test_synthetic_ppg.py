"""Synthetic wrist PPG: the pulse at the asked rate, still or moving wrists, clear errors."""

import numpy as np
import pytest

from sdk.data import preprocess
from sdk.data.records import Recording
from sdk.data.synthetic_ppg import synthetic_ppg
from sdk.device.analyze import analyze
from sdk.errors import HeartSightError


def dominant_bpm(signal: np.ndarray, fs: float) -> float:
    spectrum = np.abs(np.fft.rfft((signal - signal.mean()) * np.hanning(len(signal)), 16384))
    frequencies = np.fft.rfftfreq(16384, 1 / fs) * 60
    band = (frequencies > 30) & (frequencies < 250)
    return float(frequencies[band][spectrum[band].argmax()])


def test_beats_come_at_the_asked_rate_and_the_pulse_shows_it():
    ppg = synthetic_ppg(60, heart_rate=75, heart_rate_std=1, seed=3)
    assert ppg.signals.shape == (60 * 32, 4)
    assert 60 * (len(ppg.beat_times_s) - 1) / np.ptp(ppg.beat_times_s) == pytest.approx(75, abs=2)
    assert dominant_bpm(ppg.signals[:, 0], 32) == pytest.approx(75, abs=2)


def test_a_still_wrist_has_only_sensor_noise_and_a_ppg_only_one_none():
    noisy = synthetic_ppg(30, accel_noise=0.02, seed=1).signals[:, 1:]
    assert 0.015 < noisy.std(axis=0).mean() < 0.025
    assert np.linalg.norm(noisy.mean(axis=0)) == pytest.approx(9.81, abs=0.01)  # gravity
    assert np.ptp(synthetic_ppg(30, accel_noise=0.0, seed=1).signals[:, 1:], axis=0).max() == 0


def test_motion_appears_at_the_step_rate_on_the_accelerometer_and_leaks_into_the_ppg():
    moving = synthetic_ppg(60, heart_rate=70, motion_spm=150, motion_ms2=3, motion_leak=2, seed=2).signals
    accel = np.linalg.norm(moving[:, 1:] - moving[:, 1:].mean(axis=0), axis=1)
    steps = dominant_bpm(moving[:, 1], 32)
    assert min(abs(steps - 150 * k) for k in (0.5, 1, 2)) < 4  # a step harmonic or the arm swing
    assert accel.std() > 1.0
    still = synthetic_ppg(60, heart_rate=70, seed=2).signals
    assert np.std(moving[:, 0]) > 1.5 * np.std(still[:, 0])


@pytest.mark.parametrize("bad", [{"duration_s": 0}, {"fs": 4}, {"heart_rate": 300}, {"noise": -1},
                                 {"accel_noise": -0.1}, {"motion_spm": -5}])
def test_impossible_settings_are_refused(bad):
    with pytest.raises(HeartSightError, match="synthetic PPG needs"):
        synthetic_ppg(**bad)


@pytest.mark.parametrize("rate", [50.0, 90.0, 150.0])
def test_the_zoo_heart_rate_model_reads_a_resting_wrist(rate):
    """Rest is what the exercise database never shows; the model must read it, PPG-only inputs included."""
    for accel_noise in (0.02, 0.0):
        ppg = synthetic_ppg(40, fs=preprocess.PPG_FS, heart_rate=rate, heart_rate_std=1, accel_noise=accel_noise, seed=7)
        result = analyze(Recording("rest", ppg.fs, ppg.signals, ("ppg", "x", "y", "z")), "ppg_hr")
        assert np.median(result["hr_bpm"]) == pytest.approx(rate, abs=3), (accel_noise, result["hr_bpm"])
