"""Heart rate read from a PPG model's scores over rates, and tracked from window to window."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from models.heart_rate import (HeartRateTracker, rate_evidence, spectral_peak_scores, tracked_heart_rates,
                               window_heart_rate)
from models.registry import get_spec
from sdk.data import preprocess
from sdk.data.datasets import Dataset
from sdk.errors import HeartSightError
from sdk.explain import ClassActivationMap
from sdk.training.train import TrainConfig, fit

GRID = preprocess.HR_GRID_BPM


def scores_peaking_at(*peaks: tuple[float, float]) -> np.ndarray:
    """A trace with a bump of the given height at each (bpm, height)."""
    return sum(height * np.exp(-0.5 * ((GRID - bpm) / 2.0) ** 2) for bpm, height in peaks)


def test_a_window_reads_its_highest_scoring_rate_between_grid_points():
    assert window_heart_rate(scores_peaking_at((97.3, 10.0), (150.0, 4.0))) == pytest.approx(97.3, abs=0.3)


def test_the_tracker_holds_a_steady_rate_through_a_brief_stronger_artefact_and_follows_a_lasting_change():
    tracker = HeartRateTracker()
    steady = [tracker.update(scores_peaking_at((100.0, 8.0), (150.0, 6.0))) for _ in range(5)]
    assert steady[-1] == pytest.approx(100.0, abs=0.5)
    # one window where motion at 150 bpm outscores the pulse: the tracker stays with the pulse
    assert tracker.update(scores_peaking_at((101.0, 6.0), (150.0, 9.0))) == pytest.approx(101.0, abs=1.0)
    # the rate climbs 3 bpm per window: the tracker follows
    rates = [tracker.update(scores_peaking_at((101.0 + 3 * k, 8.0))) for k in range(1, 11)]
    assert rates[-1] == pytest.approx(131.0, abs=1.5)
    # a lasting jump elsewhere (the tracker had locked onto an artefact) is taken within a few windows
    jumped = [tracker.update(scores_peaking_at((70.0, 12.0))) for _ in range(6)]
    assert jumped[-1] == pytest.approx(70.0, abs=1.0)


def test_unusable_windows_give_no_rate_and_widen_the_search():
    traces = np.stack([scores_peaking_at((90.0, 8.0))] * 3 + [np.zeros_like(GRID)] * 2 + [scores_peaking_at((96.0, 8.0))])
    rates = tracked_heart_rates(traces, usable=np.array([1, 1, 1, 0, 0, 1], bool))
    assert np.isnan(rates[3:5]).all() and rates[:3] == pytest.approx(90.0, abs=0.5)
    assert rates[5] == pytest.approx(96.0, abs=1.0)


def test_a_trace_that_is_not_over_the_rate_grid_is_refused():
    with pytest.raises(HeartSightError, match="one per rate of HR_GRID_BPM"):
        HeartRateTracker().update(np.zeros(256))
    with pytest.raises(HeartSightError, match="finite"):
        window_heart_rate(np.full(len(GRID), np.nan))


def test_rate_evidence_decomposes_the_pulse_amplitude_over_time():
    fs = preprocess.PPG_FS
    t = np.arange(256) / fs
    pulse = np.where((t > 3) & (t < 6), np.sin(2 * np.pi * 1.5 * t), 0.0)  # pulses only between 3 and 6 s
    trace = rate_evidence(pulse, 90.0, fs)
    amplitude = abs(np.sum(pulse * np.hanning(256) * np.exp(-2j * np.pi * 1.5 * t)))
    assert trace.shape == (256,) and trace.min() >= 0
    assert trace.sum() == pytest.approx(amplitude, rel=0.05)  # ReLU drops only the ragged edges
    assert trace[(t > 3) & (t < 6)].sum() > 0.95 * trace.sum()


def _sine_windows(rates_bpm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """PPG at each rate with motion at an unrelated cadence on the accelerometer (and leaking into the PPG)."""
    fs, n = preprocess.PPG_FS, 256
    t = np.arange(n) / fs
    windows = []
    for rate in rates_bpm:
        cadence = rng.uniform(60, 180) / 60
        motion = np.sin(2 * np.pi * cadence * t + rng.uniform(0, 6))
        ppg = np.sin(2 * np.pi * rate / 60 * t + rng.uniform(0, 6)) + 0.5 * motion + 0.3 * rng.normal(size=n)
        accel = [motion * rng.uniform(0.5, 2) + 0.1 * rng.normal(size=n) for _ in range(3)]
        windows.append(np.stack([ppg, *accel]))
    return preprocess.ppg_spectra(np.array(windows))


def test_a_heart_rate_model_learns_its_scores_and_reads_rates_it_never_saw():
    """The model's class activation map over the spectra is its score over rates: trained on 60-120 bpm, it reads
    170 bpm, where a regression to the training range would collapse towards its mean."""
    rng = np.random.default_rng(0)
    spec = replace(get_spec("ppg_hr"), widths=(8, 16, 16))
    rates = rng.uniform(60, 120, 600).astype(np.float32)
    train = Dataset(_sine_windows(rates, rng), rates, np.array(["toy"] * len(rates)))
    model, history = fit(spec, train, TrainConfig(epochs=6, batch_size=32, max_lr=3e-3), progress=False)
    assert history[-1]["loss"] < history[0]["loss"]
    unseen = np.array([70.0, 110.0, 165.0, 175.0])
    traces = ClassActivationMap(model).attribute(torch.from_numpy(_sine_windows(unseen, rng)), 0).numpy()
    read = np.array([window_heart_rate(trace) for trace in traces])
    assert np.abs(read - unseen).max() < 4.0, read


def test_the_classical_tracker_cancels_a_peak_the_accelerometer_shares():
    """Motion at 120 steps/min is stronger in the PPG than the 90-bpm pulse; the accelerometer shows it, so the
    classical scores prefer the pulse. Without the accelerometer's reference the motion would win."""
    fs = preprocess.PPG_FS
    t = np.arange(256) / fs
    motion = np.sin(2 * np.pi * 2.0 * t)
    ppg = 0.6 * np.sin(2 * np.pi * 1.5 * t) + motion
    spectra = preprocess.ppg_spectra(np.stack([ppg, 3 * motion, 2 * motion, motion])[None])
    assert window_heart_rate(spectral_peak_scores(spectra)[0]) == pytest.approx(90.0, abs=2.0)
    alone = spectra[:, preprocess.PPG_SPECTRUM_CHANNELS.index("ppg_power")]
    assert window_heart_rate(alone[0]) == pytest.approx(120.0, abs=2.0)
