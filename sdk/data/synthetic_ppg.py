"""Synthetic wrist PPG with exact beat times: the still wrists and the rates the exercise recordings never show.

Every recording of the wrist database is exercise, so a heart-rate model learns nothing there about a still
wrist, where the PPG's own fundamental is the rate and the accelerometer holds only sensor noise; nor about rates
under 67 bpm. These recordings fill that in. Each beat is a systolic wave and a later, broader diastolic wave
(Gaussians; the diastolic one up to 60% as high, the dicrotic notch between them; both up to twice as wide from
one recording to another), so pulses range from nearly sinusoidal to rich in harmonics, as real ones do. Beats follow the sinus tachogram of sdk.data.synthetic (Mayer waves and respiratory sinus
arrhythmia); amplitude breathes with respiration and white noise is added. The accelerometer is white noise
around gravity (none: exactly constant, as a PPG-only input is read). Motion, when asked for, is periodic at a
step cadence: arm swing at half the step rate and the steps with two harmonics, on every accelerometer axis in
its own proportion, leaking into the PPG as another mixture of the same components (so the PPG's artefact
shares the accelerometer's frequencies, not its waveform). The heart rate and the cadence are drawn apart, so a
model cannot learn one from the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sdk.data.synthetic import sinus_rr
from sdk.errors import HeartSightError

SYSTOLE = (0.18, 0.05)  # peak time and width (s) after the beat at 60 bpm; both scale with sqrt(RR)
DIASTOLE = (0.45, 0.09)
RESPIRATION_HZ = (0.15, 0.35)


@dataclass(frozen=True)
class SyntheticPpg:
    signals: np.ndarray  # (samples, 4): PPG, accelerometer x, y, z
    fs: float
    beat_times_s: np.ndarray


def synthetic_ppg(duration_s: float = 60.0, fs: float = 32.0, heart_rate: float = 70.0, heart_rate_std: float = 2.0,
                  noise: float = 0.05, accel_noise: float = 0.02, motion_spm: float = 0.0, motion_ms2: float = 2.0,
                  motion_leak: float = 1.0, seed: int = 0) -> SyntheticPpg:
    """A resting wrist PPG of duration_s seconds at fs Hz, deterministic per seed; noise is the white noise's std
    relative to the systolic wave's height, accel_noise the accelerometer's in m/s^2 (0: a constant accelerometer,
    as a PPG-only input is read; a MEMS sensor at rest shows about 0.02). motion_spm > 0 adds motion at that step
    rate, of about motion_ms2 on the accelerometer and motion_leak times the pulse height on the PPG."""
    if not (duration_s > 0 and fs >= 8 and 25 <= heart_rate <= 240 and heart_rate_std >= 0 and noise >= 0
            and accel_noise >= 0 and motion_spm >= 0 and motion_ms2 >= 0 and motion_leak >= 0):
        raise HeartSightError(f"synthetic PPG needs duration_s > 0, fs >= 8 Hz, heart_rate in 25-240 bpm and "
                              "non-negative heart_rate_std, noise, accel_noise and motion settings; got "
                              f"{duration_s}, {fs}, {heart_rate}, {heart_rate_std}, {noise}, {accel_noise}, "
                              f"{motion_spm}, {motion_ms2}, {motion_leak}")
    rng = np.random.default_rng(seed)
    t = np.arange(round(duration_s * fs)) / fs
    rr_at = sinus_rr(heart_rate, heart_rate_std, -2.0, duration_s + 2.0, rng)
    beats = [-rng.uniform(0, rr_at(-2.0))]
    while beats[-1] < duration_s:
        beats.append(beats[-1] + rr_at(beats[-1]))
    beats = np.array(beats)
    diastolic_height, broadening = rng.uniform(0.0, 0.6), rng.uniform(0.8, 2.0)
    ppg = np.zeros_like(t)
    for beat in beats:
        stretch = np.sqrt(rr_at(beat))
        for (delay, width), height in ((SYSTOLE, 1.0), (DIASTOLE, diastolic_height)):
            ppg += height * np.exp(-0.5 * ((t - beat - delay * stretch) / (width * broadening * stretch)) ** 2)
    breathing = 1 + 0.1 * np.sin(2 * np.pi * rng.uniform(*RESPIRATION_HZ) * t + rng.uniform(0, 2 * np.pi))
    ppg = ppg * breathing + noise * rng.normal(size=t.size)
    gravity = rng.normal(size=3)
    gravity *= 9.81 / np.linalg.norm(gravity)
    accel = gravity + accel_noise * rng.normal(size=(t.size, 3))
    if motion_spm > 0:
        step_hz = motion_spm / 60.0 * (1 + 0.02 * np.cumsum(rng.normal(size=t.size)) / np.sqrt(fs * duration_s))
        phase = 2 * np.pi * np.cumsum(step_hz) / fs
        components = np.stack([np.sin(multiple * phase + rng.uniform(0, 2 * np.pi)) for multiple in (0.5, 1, 2, 3)], 1)
        accel += motion_ms2 * components @ rng.uniform(-1, 1, (4, 3))
        ppg += motion_leak * components @ rng.uniform(-1, 1, 4)
    return SyntheticPpg(np.column_stack([ppg, accel]).astype(np.float32), float(fs),
                        beats[(beats >= 0) & (beats < duration_s)])
