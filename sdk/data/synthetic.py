"""Synthetic ECG with exact beat annotations, from the dynamical model of McSharry et al.

P. E. McSharry, G. D. Clifford, L. Tarassenko, L. A. Smith, "A dynamical model for generating synthetic
electrocardiogram signals", IEEE Trans. Biomed. Eng. 50(3):289-294, 2003 (ECGSYN).

The model moves a point around a limit cycle in (x, y) while z, the ECG, is pushed by one Gaussian event
per wave i in (P, Q, R, S, T) at angle θ_i, with weight a_i and width b_i:

    dx/dt = α x - ω y,    dy/dt = α y + ω x,    α = 1 - sqrt(x² + y²),    θ = atan2(y, x)
    dz/dt = -Σ_i a_i Δθ_i exp(-Δθ_i² / 2 b_i²) - (z - z0(t)),              Δθ_i = θ - θ_i
    ω = 2π / RR,    z0(t) = A sin(2π f_resp t)    (baseline wander at the respiratory frequency)

Started on the cycle, α stays 0 and (x, y) reduces to its angle with dθ/dt = ω; with ω piecewise constant
that integrates exactly to a piecewise-linear θ(t). z is integrated with explicit Euler at the smallest
integer multiple of fs that is >= 512 Hz (written as a first-order recursive filter, so it runs
vectorised), then decimated to fs with scipy.signal.resample_poly.

Where this differs from the paper, and why:
- Tachogram, simplified: the heart rate is HR + std * s(t), where s has the paper's bimodal spectrum (Mayer
  waves at 0.1 Hz and respiratory sinus arrhythmia at 0.25 Hz, Gaussian peaks 0.01 Hz wide, LF/HF power
  0.5) with random phases. Each beat takes one R-R interval, the rate's value at the previous R, instead of
  the paper's continuously varying ω.
- Each beat owns one cycle of θ, from mid-diastole before it to mid-diastole after it, at ω_k = 2π / (mean
  of its two R-R intervals). A premature beat's short-then-long intervals would otherwise change ω at its R
  and squash one side of the QRS. Δθ is measured on the unwrapped angle against the beat's own and both
  neighbours' events, so a wave spilling over a cycle boundary (the T before an early beat) is kept whole.
- Waves are specified in seconds at 60 bpm (Table 1's θ_i and b_i over 2π) and converted to angles per
  beat: the QRS keeps its duration at every rate, P and T offsets and widths scale with sqrt(RR) (Bazett),
  so the QT interval shortens with rate.
- a_i = ω H_i / b_i², which makes the height of wave i equal H_i mV at any rate (the paper rescales the
  output instead); H_i are Table 1's a_i b_i² scaled so that R is 1.2 mV.
- Baseline: A = 0.15 mV (the paper's value) at 0.25 Hz with a random phase; the 1 s relaxation of z
  attenuates it to about 0.08 mV. The same relaxation, as in the paper, leaves z about 0.1 mV below z0
  after each beat (the waves' net area leaking away), so the T-P segment is not exactly at z0.

Ectopic beats replace the requested fraction of beats:
- "V" (premature ventricular): arrives at 0.6-0.75 of the sinus R-R after the previous beat; no P wave,
  a wide (Gaussian width 40 ms against 16 ms for a normal R) and large (1.7 mV) main deflection with a
  slurred opposite terminal part, and a T wave discordant to it. Its polarity is drawn once per record
  (one ectopic focus). The sinus beat it pre-empts is blocked, so the next beat comes on the sinus
  schedule: a full compensatory pause.
- "S" (premature supraventricular): same coupling; normal QRS, flatter and narrower P (another atrial
  focus). It resets the sinus node, so the next beat follows one sinus R-R later: a non-compensatory pause.
Ectopic beats are never among the first two or the last beat of the record, and never adjacent (so the
fractions can sum to at most 0.5). Positions come from stochastic quota sampling: a beat becomes ectopic
when the type's shortfall against fraction * beats so far exceeds a uniform random number, which keeps
every prefix of the record within about one beat of the requested fractions while spacing stays irregular.

Atrial fibrillation replaces the sinus rhythm during the requested episodes (start, end) in seconds: each
interval is drawn afresh, independent of the last (log-normal around the sinus R-R shortened by AF_RATE_FACTOR,
spread AF_RR_SPREAD, clipped to AF_RR_RANGE_S), beats have no P wave (the QRS and T are a sinus beat's: AAMI
class N), and fibrillatory waves (AF_F_WAVE_HZ, AF_F_WAVE_MV) ripple the baseline, faded in and out over
AF_F_WAVE_FADE_S. No ectopic beat is placed inside an episode.

r_peaks are measured on the generated signal before the white noise is added: the extremum (maximum, or
minimum for a negative V complex) within 50 ms of each beat's R event, so they are exact on the output grid.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter, resample_poly

from sdk.errors import HeartSightError

MIN_FS = 50.0
HEART_RATE_RANGE = (30.0, 220.0)  # bpm
MAX_STD_FRACTION = 0.1  # heart_rate_std <= this * heart_rate keeps the instantaneous rate far from 0
ECTOPIC_TYPES = ("S", "V")
MAX_ECTOPIC_FRACTION = 0.5  # no two ectopic beats are adjacent
COUPLING_RANGE = (0.6, 0.75)  # premature R-R as a fraction of the sinus R-R
MIN_INTERNAL_FS = 512.0  # Euler step small against the narrowest wave (R, ~16 ms)
PAD_SECONDS = 5.0  # integrated either side of the record: the start-up transient (1 s) decays below 1 µV
LOCATE_SECONDS = 0.05  # the R extremum is sought this far either side of the R event

MAYER_HZ, RSA_HZ, PEAK_WIDTH_HZ, LF_HF_RATIO = 0.1, 0.25, 0.01, 0.5
TACHOGRAM_STEP = 0.5  # s; the spectrum has nothing above 0.3 Hz
TACHOGRAM_MIN_SAMPLES = 512  # 256 s: frequency bins fine enough to resolve the 0.01 Hz wide peaks
BASELINE_MV, RESPIRATION_HZ = 0.15, 0.25

# Table 1 of the paper, one row per wave P, Q, R, S, T: θ_i (rad), a_i, b_i (rad), at 60 bpm.
TABLE_1 = np.array(
    [
        [-np.pi / 3, 1.2, 0.25],
        [-np.pi / 12, -5.0, 0.1],
        [0.0, 30.0, 0.1],
        [np.pi / 12, -7.5, 0.1],
        [np.pi / 2, 0.75, 0.4],
    ]
)
P, Q, R, S, T = range(5)
R_HEIGHT_MV = 1.2

# Per wave: offset from R (s), Gaussian width (s), height (mV), at 60 bpm.
SINUS_WAVES = np.column_stack(
    [
        TABLE_1[:, 0] / (2 * np.pi),
        TABLE_1[:, 2] / (2 * np.pi),
        TABLE_1[:, 1] * TABLE_1[:, 2] ** 2 * R_HEIGHT_MV / (TABLE_1[R, 1] * TABLE_1[R, 2] ** 2),
    ]
)
ATRIAL_WAVES = SINUS_WAVES.copy()
ATRIAL_WAVES[P] = [SINUS_WAVES[P, 0], 0.8 * SINUS_WAVES[P, 1], 0.5 * SINUS_WAVES[P, 2]]
# Positive polarity; a record's V beats are multiplied by +1 or -1. No P and no Q (heights 0).
VENTRICULAR_WAVES = np.array(
    [
        [SINUS_WAVES[P, 0], SINUS_WAVES[P, 1], 0.0],
        [SINUS_WAVES[Q, 0], SINUS_WAVES[Q, 1], 0.0],
        [0.0, 0.040, 1.7],
        [0.060, 0.030, -0.45],
        [0.30, 0.080, -0.55],
    ]
)


AF_RATE_FACTOR = 1.15  # ventricular rate in AF, relative to the sinus rate it replaces
AF_RR_SPREAD = 0.2  # standard deviation of log(RR) in AF: coefficient of variation about 0.2
AF_RR_RANGE_S = (0.3, 2.0)
AF_F_WAVE_HZ = (5.0, 7.0)  # fibrillatory wave frequency, drifting within this range
AF_F_WAVE_MV = 0.08
AF_F_WAVE_FADE_S = 0.5
AF_WAVES = SINUS_WAVES * [1.0, 1.0, 1.0]
AF_WAVES[P, 2] = 0.0  # no P wave: the atria fibrillate instead of contracting


@dataclass(frozen=True)
class SyntheticECG:
    """A generated lead with its ground truth: R-peak samples and the AAMI class of every beat."""

    signal: np.ndarray  # float32, mV, shape (n_samples,)
    fs: float
    r_peaks: np.ndarray  # int64 sample index of each beat's R extremum
    labels: tuple[str, ...]  # "N", "S" or "V" per beat, aligned with r_peaks
    af_episodes: tuple[tuple[float, float], ...] = ()  # (start, end) s of atrial fibrillation

    def af_at(self, times_s: np.ndarray) -> np.ndarray:
        """Whether each time (s) lies in an AF episode."""
        times_s = np.asarray(times_s, np.float64)
        return np.any([(times_s >= a) & (times_s < b) for a, b in self.af_episodes], axis=0) \
            if self.af_episodes else np.zeros(times_s.shape, bool)


def synthetic_ecg(
    duration_s: float = 60.0,
    fs: float = 360.0,
    heart_rate: float = 70.0,
    heart_rate_std: float = 2.0,
    noise_mv: float = 0.02,
    ectopic: dict[str, float] | None = None,
    seed: int = 0,
    af_episodes: tuple[tuple[float, float], ...] = (),
) -> SyntheticECG:
    """ECG of `duration_s` seconds at `fs` Hz, deterministic per `seed`.

    heart_rate and heart_rate_std are the mean and standard deviation of the sinus rate in bpm, noise_mv the
    std of the added white noise. ectopic maps "S"/"V" to the fraction of beats replaced by that ectopic
    type (default: none). af_episodes: (start, end) seconds of atrial fibrillation.
    """
    fractions = _checked_fractions(duration_s, fs, heart_rate, heart_rate_std, noise_mv, ectopic)
    af_episodes = _checked_episodes(af_episodes, duration_s)
    rng = np.random.default_rng(seed)
    n = round(duration_s * fs)
    up = math.ceil(MIN_INTERNAL_FS / fs)
    pad = round(PAD_SECONDS * fs)
    t = np.arange(-pad * up, (n + pad) * up) / (up * fs)

    rr_at = sinus_rr(heart_rate, heart_rate_std, t[0] - PAD_SECONDS, t[-1] + PAD_SECONDS, rng)
    baseline = BASELINE_MV * np.sin(2 * np.pi * RESPIRATION_HZ * t + rng.uniform(0, 2 * np.pi))
    v_polarity = rng.choice([-1.0, 1.0])
    last_r = (n - 1) / fs
    in_af = lambda time: any(a <= time < b for a, b in af_episodes)  # noqa: E731
    beat_times, labels = _schedule_beats(rr_at, t[0], t[-1], last_r, fractions, rng, in_af)

    waves = {"N": SINUS_WAVES, "S": ATRIAL_WAVES, "V": VENTRICULAR_WAVES * [1.0, 1.0, v_polarity]}
    shapes = np.stack([_scaled(AF_WAVES if in_af(time) else waves[label], rr_at(time))
                       for time, label in zip(beat_times, labels)])
    z = _integrate(t, beat_times, shapes, baseline)
    clean = resample_poly(z, 1, up)[pad : pad + n] + _fibrillatory_waves(np.arange(n) / fs, af_episodes, rng)

    recorded = (beat_times >= 0) & (beat_times <= last_r)
    r_peaks = _locate_extrema(clean, beat_times[recorded] * fs, np.sign(shapes[recorded, R, 2]), fs)
    signal = clean + rng.normal(0.0, noise_mv, n)
    return SyntheticECG(
        signal=signal.astype(np.float32),
        fs=float(fs),
        r_peaks=r_peaks,
        labels=tuple(label for label, keep in zip(labels, recorded) if keep),
        af_episodes=af_episodes,
    )


def _checked_episodes(episodes, duration_s: float) -> tuple[tuple[float, float], ...]:
    checked = []
    for episode in episodes:
        try:
            start, end = (float(v) for v in episode)
        except (TypeError, ValueError):
            raise HeartSightError(f"af_episodes must be (start, end) pairs in seconds, got {episode!r}") from None
        if not 0 <= start < end <= duration_s:
            raise HeartSightError(f"an AF episode must satisfy 0 <= start < end <= duration_s ({duration_s:g} s), "
                                  f"got ({start:g}, {end:g})")
        checked.append((start, end))
    return tuple(sorted(checked))


def _fibrillatory_waves(t: np.ndarray, episodes, rng: np.random.Generator) -> np.ndarray:
    """f waves: a sinusoid whose frequency drifts within AF_F_WAVE_HZ, faded in and out at each episode's edges."""
    if not episodes:
        return np.zeros_like(t)
    low, high = AF_F_WAVE_HZ
    knots = np.arange(int(t[-1]) + 2, dtype=np.float64)  # a new frequency every second, linearly in between
    frequency = np.interp(t, knots, rng.uniform(low, high, len(knots)))
    phase = 2 * np.pi * np.cumsum(frequency) * (t[1] - t[0] if len(t) > 1 else 0.0)
    envelope = np.zeros_like(t)
    for a, b in episodes:
        envelope = np.maximum(envelope, np.clip(np.minimum(t - a, b - t) / AF_F_WAVE_FADE_S, 0.0, 1.0))
    return AF_F_WAVE_MV * envelope * np.sin(phase)


def _checked_fractions(duration_s, fs, heart_rate, heart_rate_std, noise_mv, ectopic) -> dict[str, float]:
    """Validate the arguments (NaN fails every range check); return the nonzero ectopic fractions."""
    if not 0 < duration_s < math.inf:
        raise HeartSightError(f"duration_s must be a positive number of seconds, got {duration_s!r}")
    if not MIN_FS <= fs < math.inf:
        raise HeartSightError(f"fs must be at least {MIN_FS:g} Hz, got {fs!r}")
    if round(duration_s * fs) < 1:
        raise HeartSightError(
            f"duration_s={duration_s!r} gives no sample at fs={fs:g} Hz; "
            f"it must be at least 1/fs = {1 / fs:g} s"
        )
    low, high = HEART_RATE_RANGE
    if not low <= heart_rate <= high:
        raise HeartSightError(f"heart_rate must be in [{low:g}, {high:g}] bpm, got {heart_rate!r}")
    max_std = MAX_STD_FRACTION * heart_rate
    if not 0 <= heart_rate_std <= max_std:
        raise HeartSightError(
            f"heart_rate_std must be in [0, {max_std:g}] bpm ({MAX_STD_FRACTION:g} x heart_rate), "
            f"got {heart_rate_std!r}"
        )
    if not 0 <= noise_mv < math.inf:
        raise HeartSightError(f"noise_mv must be >= 0 mV, got {noise_mv!r}")
    ectopic = ectopic or {}
    unknown = [kind for kind in ectopic if kind not in ECTOPIC_TYPES]
    if unknown:
        raise HeartSightError(f"ectopic keys must be 'S' or 'V', got {', '.join(map(repr, unknown))}")
    for kind, fraction in ectopic.items():
        if not 0 <= fraction <= MAX_ECTOPIC_FRACTION:
            raise HeartSightError(
                f"ectopic[{kind!r}] must be a fraction of beats in [0, {MAX_ECTOPIC_FRACTION:g}], "
                f"got {fraction!r}"
            )
    total = sum(ectopic.values())
    if total > MAX_ECTOPIC_FRACTION:
        raise HeartSightError(
            f"ectopic fractions must sum to at most {MAX_ECTOPIC_FRACTION:g} "
            f"(ectopic beats are never adjacent), got {total:g}"
        )
    return {kind: float(fraction) for kind, fraction in ectopic.items() if fraction > 0}


def sinus_rr(
    heart_rate: float, heart_rate_std: float, start: float, stop: float, rng: np.random.Generator
) -> Callable[[float], float]:
    """Sinus R-R interval (s) as a function of time, from a heart rate with the paper's bimodal spectrum."""
    n = max(TACHOGRAM_MIN_SAMPLES, math.ceil((stop - start) / TACHOGRAM_STEP) + 1)
    freqs = np.fft.rfftfreq(n, TACHOGRAM_STEP)
    power = LF_HF_RATIO * np.exp(-0.5 * ((freqs - MAYER_HZ) / PEAK_WIDTH_HZ) ** 2) + np.exp(
        -0.5 * ((freqs - RSA_HZ) / PEAK_WIDTH_HZ) ** 2
    )
    wave = np.fft.irfft(np.sqrt(power) * np.exp(2j * np.pi * rng.random(freqs.size)), n)
    rr = 60.0 / (heart_rate + heart_rate_std * (wave - wave.mean()) / wave.std())
    times = start + TACHOGRAM_STEP * np.arange(n)
    return lambda time: float(np.interp(time, times, rr))


def _schedule_beats(
    rr_at: Callable[[float], float],
    start: float,
    stop: float,
    last_r: float,
    fractions: dict[str, float],
    rng: np.random.Generator,
    in_af: Callable[[float], bool] = lambda time: False,
) -> tuple[np.ndarray, list[str]]:
    """R-event times and labels covering [start, stop] with two beats to spare on each side.

    Only beats with R in [0, last_r] are recorded; the quota and the edge rules count those.
    """
    times = [start - 2 * rr_at(start)]
    labels = ["N"]
    next_sinus = times[0] + rr_at(times[0])
    counts = Counter()
    while len(times) < 2 or times[-2] <= stop:
        previous = times[-1]
        kind = "N"
        if in_af(previous):  # the next interval is drawn afresh: no rhythm to predict it by
            rr = np.exp(rng.normal(np.log(rr_at(previous) / AF_RATE_FACTOR), AF_RR_SPREAD))
            next_sinus = previous + float(np.clip(rr, *AF_RR_RANGE_S))
        elif fractions and counts.total() >= 2 and labels[-1] == "N":
            shortfall = {k: f * (counts.total() + 1) - counts[k] for k, f in fractions.items()}
            candidate = max(shortfall, key=shortfall.get)
            if shortfall[candidate] >= rng.random():
                early = previous + rng.uniform(*COUPLING_RANGE) * rr_at(previous)
                # V: the pre-empted sinus beat is blocked, the next one is on time.
                # S: the sinus node restarts from the early beat.
                after = next_sinus + rr_at(next_sinus) if candidate == "V" else early + rr_at(early)
                if after <= last_r:
                    kind, time, next_sinus = candidate, early, after
        if kind == "N":
            time = next_sinus
            next_sinus = time + rr_at(time)
        times.append(time)
        labels.append(kind)
        if 0 <= time <= last_r:
            counts[kind] += 1
    return np.array(times), labels


def _scaled(waves: np.ndarray, rr: float) -> np.ndarray:
    """Wave table at sinus R-R `rr` (s): QRS unchanged, P and T offsets and widths times sqrt(rr) (Bazett)."""
    scaled = waves.copy()
    scaled[[P, T], :2] *= math.sqrt(rr)
    return scaled


def _integrate(t: np.ndarray, beat_times: np.ndarray, shapes: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """z(t) of the model on the uniform grid t, starting from z = 0 at t[0]."""
    step = t[1] - t[0]
    beats = np.arange(beat_times.size)
    mid_diastole = (beat_times[1:] + beat_times[:-1]) / 2
    knot_times = np.concatenate([beat_times[:1], mid_diastole, beat_times[-1:]])
    knot_angles = 2 * np.pi * np.concatenate([[0.0], beats[1:] - 0.5, beats[-1:]])
    theta = np.interp(t, knot_times, knot_angles)
    omega = 2 * np.pi / np.gradient(beat_times)  # one cycle per beat, mid-diastole to mid-diastole

    r_angles = np.interp(beat_times, knot_times, knot_angles)
    centres = r_angles[:, None] + omega[:, None] * shapes[:, :, 0]
    widths = omega[:, None] * shapes[:, :, 1]
    heights = shapes[:, :, 2]

    cycle = np.rint(theta / (2 * np.pi)).astype(np.int64)
    events = np.zeros_like(t)  # Σ_i (H_i / b_i²) Δθ_i exp(-Δθ_i² / 2 b_i²) over this beat and its neighbours
    for beat in (cycle - 1, cycle, cycle + 1):
        for wave in range(heights.shape[1]):
            offset = theta - centres[beat, wave]
            width = widths[beat, wave]
            events += heights[beat, wave] / width**2 * offset * np.exp(-0.5 * (offset / width) ** 2)
    drive = baseline - omega[cycle] * events  # dz/dt = drive - z
    # Euler: z[j+1] = z[j] + step * (drive[j] - z[j])
    return lfilter([0.0, step], [1.0, step - 1.0], drive)


def _locate_extrema(signal: np.ndarray, approx: np.ndarray, polarity: np.ndarray, fs: float) -> np.ndarray:
    """Sample of the extremum of the given polarity within LOCATE_SECONDS of each approximate position."""
    reach = round(LOCATE_SECONDS * fs)
    peaks = []
    for centre, sign in zip(np.rint(approx).astype(np.int64), polarity):
        low, high = max(centre - reach, 0), min(centre + reach + 1, signal.size)
        peaks.append(low + int(np.argmax(sign * signal[low:high])))
    return np.array(peaks, dtype=np.int64)
