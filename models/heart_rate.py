"""Heart rate from a PPG model's explanation, tracked from window to window.

A heart-rate model (ppg_hr) reads spectra (sdk.data.preprocess.ppg_spectra) and is trained so that its class
activation map over them scores each rate of HR_GRID_BPM: the map is a log-likelihood over heart rates, and the
heart rate is read from it. The device's explanation trace is therefore what the rate was read from; torch, the
int8 ONNX graph and the C library give it alike (ReLU'd, in float CAM units).

A heart rate changes little between windows 2 s apart while motion artefacts jump, so HeartRateTracker filters
the per-window scores forward in time (a hidden Markov model over the grid, causal as on the device).

spectral_peak_scores is the classical baseline the model is compared with (benchmarks/ppg_hr.py): the PPG's own
spectral peaks, cancelled where the accelerometer shows the same motion, tracked alike.
"""

from __future__ import annotations

import numpy as np

from sdk.data.preprocess import HR_GRID_BPM, PPG_SPECTRUM_CHANNELS
from sdk.errors import HeartSightError

CLASSICAL_SHARPNESS = 1.0  # log-power units -> scores: how sharply the classical baseline prefers its highest peak
STEP_SIGMA_BPM = 4.0  # typical change of heart rate from one window to the next (2 s later)
RECOVERY = 1e-4  # share of belief spread evenly each step, so the tracker can leave a wrong rate it locked onto
ESTIMATE_SPAN_BPM = 2.0  # the estimate is the belief-weighted mean rate within this distance of the most likely one


def _transition(step_sigma_bpm: float) -> np.ndarray:
    difference = HR_GRID_BPM[:, None] - HR_GRID_BPM[None, :]
    moves = np.exp(-0.5 * (difference / step_sigma_bpm) ** 2)
    moves /= moves.sum(axis=0, keepdims=True)  # column j: where a rate j may go
    return (1 - RECOVERY) * moves + RECOVERY / len(HR_GRID_BPM)


def _estimate(belief: np.ndarray) -> float:
    near = np.abs(HR_GRID_BPM - HR_GRID_BPM[belief.argmax()]) <= ESTIMATE_SPAN_BPM
    return float((HR_GRID_BPM[near] * belief[near]).sum() / belief[near].sum())


def _likelihood(trace: np.ndarray) -> np.ndarray:
    trace = np.asarray(trace, np.float64)
    if trace.shape != HR_GRID_BPM.shape or not np.isfinite(trace).all():
        raise HeartSightError(f"a heart-rate trace must hold {len(HR_GRID_BPM)} finite scores (one per rate of "
                              f"HR_GRID_BPM), got shape {trace.shape}; pass the explanation of a ppg_hr model")
    return np.exp(trace - trace.max())


def spectral_peak_scores(spectra: np.ndarray) -> np.ndarray:
    """Classical scores over HR_GRID_BPM from a PPG model's inputs (sdk.data.preprocess.ppg_spectra, (n, 9, bins)):
    the PPG's log power, less the accelerometer's where motion is stronger than the PPG's mean (motion cancellation
    referenced to the accelerometer, in the spectrum)."""
    ppg = spectra[:, PPG_SPECTRUM_CHANNELS.index("ppg_power")]
    motion = spectra[:, PPG_SPECTRUM_CHANNELS.index("accel_power")]
    return CLASSICAL_SHARPNESS * (ppg - np.maximum(motion, 0.0))


def window_heart_rate(trace: np.ndarray) -> float:
    """One window's heart rate from its scores alone (no tracking)."""
    return _estimate(_likelihood(trace))


class HeartRateTracker:
    """Causal heart-rate tracking over HR_GRID_BPM: `update(trace)` per window, `skip()` for an unreadable one."""

    def __init__(self, step_sigma_bpm: float = STEP_SIGMA_BPM):
        self._transition = _transition(step_sigma_bpm)
        self._belief: np.ndarray | None = None

    def update(self, trace: np.ndarray) -> float:
        likelihood = _likelihood(trace)
        belief = likelihood if self._belief is None else (self._transition @ self._belief) * likelihood
        self._belief = belief / belief.sum()
        return _estimate(self._belief)

    def skip(self) -> None:
        """A window without a usable signal: the rate may have moved, nothing says where."""
        if self._belief is not None:
            self._belief = self._transition @ self._belief


def tracked_heart_rates(traces: np.ndarray, usable: np.ndarray | None = None) -> np.ndarray:
    """Heart rate (bpm) of each of one recording's consecutive windows; NaN where a window is not usable."""
    tracker = HeartRateTracker()
    usable = np.ones(len(traces), bool) if usable is None else np.asarray(usable, bool)
    rates = np.full(len(traces), np.nan)
    for i, trace in enumerate(traces):
        if usable[i]:
            rates[i] = tracker.update(trace)
        else:
            tracker.skip()
    return rates


def rate_evidence(ppg_window: np.ndarray, bpm: float, fs: float) -> np.ndarray:
    """Where in a band-passed PPG window the pulse beats at the rate read: each sample's share of the window's
    Fourier amplitude at that rate (Hann-tapered, as the spectra), ReLU'd. The shares add up to the amplitude, so
    this is an exact decomposition over time of the evidence the rate was read from: a trace aligned with the
    signal, as an alert's excerpt needs."""
    x = np.asarray(ppg_window, np.float64)
    terms = (x - x.mean()) * np.hanning(len(x)) * np.exp(-2j * np.pi * bpm / 60.0 * np.arange(len(x)) / fs)
    total = terms.sum()
    return np.maximum((terms * np.conj(total)).real / max(abs(total), 1e-12), 0.0).astype(np.float32)
