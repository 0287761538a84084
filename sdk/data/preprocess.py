"""Model inputs from raw signals: the one preprocessing path used by training, evaluation and the device.

Everything here is causal (filters carry state, context uses only past beats) so the device, fed chunk by
chunk, computes what training saw. ECG models read these time-aligned channels, so the saliency
trace accounts for everything a model used:
- the band-passed ECG, scaled by the patient's recent R-wave amplitude (not per window: a premature beat
  must not be rescaled to look normal);
- a rhythm track: a small bump at every R peak whose height is that beat's RR interval relative to the
  patient's recent mean RR, minus 1 (premature beats dip, pauses rise);
- for rhythm models, an RR-change track: a bump at every R peak whose height is how much the relative RR
  changed from the previous beat (beat-to-beat irregularity, the mark of atrial fibrillation);
- for beat models, a centre marker: a bump at the beat being classified, because a global-average-pool
  head cannot otherwise tell which beat of a multi-beat window it is asked about;
- for beat models, a template difference: the classified beat minus the median of its window's other beats of
  normal timing (the patient's own local template), zero elsewhere. What differs between patients (lead
  placement, QRS shape) cancels; what differs from this patient's own beats (an ectopic focus) remains.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, sosfilt, sosfilt_zi

from sdk.errors import HeartSightError

ECG_FS = 128.0
PPG_FS = 32.0
HISTORY_BEATS = 256  # about 3-4 minutes of beats for the patient's "recent" RR and amplitude
BUMP_SIGMA = 3.0  # samples at the model rate
R_SEARCH_S = 0.05  # the band-passed R extremum is looked for within this distance of the detected peak
TEMPLATE_SPAN_S = (0.25, 0.45)  # a beat for the template difference: from 0.25 s before its R peak to 0.45 s after
TEMPLATE_MIN_RR = -0.15  # beats at least this close to the recent mean RR (rr_relative) make the template


class CausalFilter:
    """A causal IIR filter that keeps its state: a stream filtered chunk by chunk equals one pass over it all.

    The state starts in steady state for the first sample, so a DC offset does not ring for seconds.
    """

    def __init__(self, sos: np.ndarray):
        self.sos = sos
        self.state: np.ndarray | None = None

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.shape[0] == 0:
            return chunk.astype(np.float32)
        if self.state is None:
            steady = sosfilt_zi(self.sos)  # (sections, 2)
            self.state = steady.reshape(steady.shape + (1,) * (chunk.ndim - 1)) * chunk[0]
        out, self.state = sosfilt(self.sos, chunk, axis=0, zi=self.state)
        return out.astype(np.float32)


ECG_BAND_HZ = (0.5, 40.0)  # removes baseline wander and mains/EMG noise, keeps QRS and P/T morphology
PPG_BAND_HZ = (0.5, 4.0)  # 30-240 bpm: the pulse band for PPG and the motion band for the accelerometer


def ecg_bandpass(fs: float = ECG_FS) -> CausalFilter:
    return CausalFilter(butter(2, list(ECG_BAND_HZ), btype="bandpass", fs=fs, output="sos"))


def ppg_bandpass(fs: float = PPG_FS) -> CausalFilter:
    return CausalFilter(butter(2, list(PPG_BAND_HZ), btype="bandpass", fs=fs, output="sos"))


def check_input_rate(fs: float, task: str) -> None:
    """Refuse a sampling rate that cannot carry the band the model reads (below twice its upper edge): that is
    a wrong --fs far more often than a real sensor, and upsampling cannot recover what was never sampled."""
    low, high = PPG_BAND_HZ if task == "hr" else ECG_BAND_HZ
    if fs < 2 * high:
        kind = "PPG" if task == "hr" else "ECG"
        raise HeartSightError(f"a sampling rate of {fs:g} Hz is too low for {kind}: the model reads {low:g}-{high:g} Hz "
                              f"of the signal, which needs at least {2 * high:g} Hz; check the sampling rate (--fs) "
                              "of the recording")


@dataclass(frozen=True)
class BeatContext:
    """Per-beat context computed from past beats only, for one continuous ECG at the model rate."""

    r_peaks: np.ndarray  # sample index of each beat at the model rate
    rr_relative: np.ndarray  # RR before the beat / mean of the previous HISTORY_BEATS RRs, minus 1
    rr_change: np.ndarray  # |change of rr_relative from the previous beat|
    amplitude_scale: np.ndarray  # median |R amplitude| of the previous HISTORY_BEATS beats (incl. this one)


class BeatContextBuilder:
    """The beat context, one beat at a time: beat_context runs it over a recording's beats, the device's Monitor
    over each R peak as it is confirmed, so training and the device compute the same numbers bit for bit.

    It keeps the context of the beats added since the last `forget`, oldest first.
    """

    def __init__(self):
        self.r_peaks: list[int] = []
        self.rr_relative: list[np.float32] = []
        self.rr_change: list[np.float32] = []
        self.amplitude_scale: list[np.float32] = []
        self._recent_rr: deque[int] = deque(maxlen=HISTORY_BEATS)
        self._recent_amplitudes: deque[np.float32] = deque(maxlen=HISTORY_BEATS)
        self._last: tuple[int, np.float32] | None = None  # the previous beat's R peak and rr_relative

    def add(self, r: int, amplitude: float) -> None:
        """The next beat: its R peak (model-rate sample) and its R amplitude (r_amplitudes)."""
        rr_relative = 0.0  # first beat: RR unknown
        if self._last is not None:
            rr = r - self._last[0]
            self._recent_rr.append(rr)
            rr_relative = rr / (sum(self._recent_rr) / len(self._recent_rr)) - 1.0
        rr_relative = np.float32(np.clip(rr_relative, -1.0, 2.0))
        previous = rr_relative if self._last is None else self._last[1]
        self._recent_amplitudes.append(np.float32(amplitude))
        median = np.median(np.array(self._recent_amplitudes, np.float32))
        self.r_peaks.append(r)
        self.rr_relative.append(rr_relative)
        self.rr_change.append(np.abs(rr_relative - previous))
        self.amplitude_scale.append(np.maximum(median, np.float32(0.05)))  # mV: a lead-off must not blow it up
        self._last = (r, rr_relative)

    def forget(self, n: int) -> None:
        """Drop the n oldest beats' context; what comes next is computed as if they were still here."""
        del self.r_peaks[:n], self.rr_relative[:n], self.rr_change[:n], self.amplitude_scale[:n]

    def context(self) -> BeatContext:
        return BeatContext(np.array(self.r_peaks, np.int64), np.array(self.rr_relative, np.float32),
                           np.array(self.rr_change, np.float32), np.array(self.amplitude_scale, np.float32))


def beat_context(filtered_ecg: np.ndarray, r_peaks: np.ndarray, fs: float = ECG_FS) -> BeatContext:
    builder = BeatContextBuilder()
    for r, amplitude in zip(np.asarray(r_peaks, dtype=np.int64).tolist(), r_amplitudes(filtered_ecg, r_peaks, fs)):
        builder.add(r, amplitude)
    return builder.context()


def r_amplitudes(filtered_ecg: np.ndarray, r_peaks: np.ndarray, fs: float = ECG_FS) -> np.ndarray:
    """Largest |band-passed value| near each R peak (the filter delays and may invert the peak)."""
    reach = int(round(R_SEARCH_S * fs))
    padded = np.pad(np.abs(filtered_ecg), reach)
    offsets = np.arange(2 * reach + 1)
    return padded[np.asarray(r_peaks)[:, None] + offsets[None, :]].max(axis=1) if len(r_peaks) else np.zeros(0)


def bump_track(n_samples: int, positions: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """A signal that is zero except for a Gaussian bump of the given height at each position."""
    track = np.zeros(n_samples, dtype=np.float32)
    reach = int(4 * BUMP_SIGMA)
    shape = np.exp(-0.5 * (np.arange(-reach, reach + 1) / BUMP_SIGMA) ** 2).astype(np.float32)
    for position, height in zip(np.asarray(positions), np.asarray(heights)):
        lo, hi = position - reach, position + reach + 1
        a, b = max(lo, 0), min(hi, n_samples)
        if a < b:
            track[a:b] += height * shape[a - lo: b - lo]
    return track


@dataclass(frozen=True)
class EcgTracks:
    """A continuous ECG prepared for windowing: filtered signal, rhythm track and beat context."""

    filtered: np.ndarray
    rhythm: np.ndarray
    rr_change: np.ndarray  # a bump at every R peak: |change of the relative RR from the previous beat|
    context: BeatContext


def ecg_tracks(ecg_at_model_fs: np.ndarray, r_peaks: np.ndarray, fs: float = ECG_FS) -> EcgTracks:
    """Filter an ECG already resampled to the model rate and build its rhythm track from R peaks."""
    filtered = ecg_bandpass(fs)(ecg_at_model_fs)
    context = beat_context(filtered, r_peaks, fs)
    return EcgTracks(filtered, bump_track(len(filtered), context.r_peaks, context.rr_relative),
                     bump_track(len(filtered), context.r_peaks, context.rr_change), context)


def _slices(signal: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """signal[s:s+length] for every start, zero outside the signal."""
    padded = np.pad(signal, length)
    return padded[np.asarray(starts)[:, None] + length + np.arange(length)[None, :]]


def beat_windows(tracks: EcgTracks, beat_indices: np.ndarray, window: int) -> np.ndarray:
    """(n, 4, window) inputs for beat models: scaled ECG, centre marker, rhythm and template difference; the
    beat at the window centre."""
    beat_indices = np.asarray(beat_indices, dtype=np.int64)
    centres = tracks.context.r_peaks[beat_indices]
    starts = centres - window // 2
    scale = tracks.context.amplitude_scale[beat_indices][:, None]
    ecg = np.clip(_slices(tracks.filtered, starts, window) / scale, -8.0, 8.0).astype(np.float32)
    marker = bump_track(window, np.array([window // 2]), np.array([1.0]))
    rhythm = _slices(tracks.rhythm, starts, window)
    delta = np.stack([template_difference(row, _beats_in_window(tracks.context, start, window), window)
                      for row, start in zip(ecg, starts)]) if len(starts) else np.zeros_like(ecg)
    return np.stack([ecg, np.broadcast_to(marker, ecg.shape), rhythm, delta], axis=1).astype(np.float32)


def _beats_in_window(context: BeatContext, start: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions within the window, rr_relative) of the beats whose R peak lies in [start, start + window)."""
    lo, hi = np.searchsorted(context.r_peaks, [start, start + window])
    return context.r_peaks[lo:hi] - start, context.rr_relative[lo:hi]


def template_difference(ecg: np.ndarray, beats: tuple[np.ndarray, np.ndarray], window: int) -> np.ndarray:
    """A window's template-difference track: its centre beat minus the sample-wise median of the window's other
    whole beats of normal timing (all other whole beats if none has; zero if the window holds no other beat)."""
    positions, rr_relative = beats
    before, after = (int(round(s * ECG_FS)) for s in TEMPLATE_SPAN_S)
    centre = window // 2
    whole = (positions - before >= 0) & (positions + after <= window) & (positions != centre)
    others = positions[whole & (rr_relative >= TEMPLATE_MIN_RR)]
    others = others if len(others) else positions[whole]
    track = np.zeros(window, np.float32)
    if not len(others) or centre - before < 0 or centre + after > window:
        return track
    template = np.median(np.stack([ecg[p - before: p + after] for p in others]), axis=0)
    track[centre - before: centre + after] = ecg[centre - before: centre + after] - template
    return track


MIN_RHYTHM_DECISION_S = 5.0  # a rhythm model decides on a last, zero-padded window holding at least this much signal
MIN_RHYTHM_BEATS = 4  # fewer detected beats in a rhythm window leave no rhythm to judge (a pause, or lost contact)
TOO_FEW_BEATS = "too_few_beats"  # the window's quality problem then: no diagnosis rather than a silent non-AF


def rhythm_problem(r_peaks: np.ndarray, start: int, window: int) -> str | None:
    """TOO_FEW_BEATS when fewer than MIN_RHYTHM_BEATS R peaks lie in the rhythm window [start, start + window)."""
    inside = np.count_nonzero((np.asarray(r_peaks) >= start) & (np.asarray(r_peaks) < start + window))
    return TOO_FEW_BEATS if inside < MIN_RHYTHM_BEATS else None


def window_starts(n_samples: int, window: int, hop: int, task: str, fs: float) -> np.ndarray:
    """Model-rate starts of a window model's windows over n_samples: every hop while a whole window fits, and for
    rhythm models one more when at least MIN_RHYTHM_DECISION_S of signal follow, zero-padded to the window's length
    (so a 15-s recording gets two AF decisions, and a 6-s one gets one instead of none)."""
    starts = np.arange(0, n_samples - window + 1, hop)
    following = int(starts[-1]) + hop if len(starts) else 0
    if task == "rhythm" and following < n_samples and n_samples - following >= MIN_RHYTHM_DECISION_S * fs:
        starts = np.append(starts, following)
    return starts


def rhythm_windows(tracks: EcgTracks, starts: np.ndarray, window: int) -> np.ndarray:
    """(n, 3, window) inputs for rhythm models: scaled ECG, rhythm track and RR-change track.

    The RR-change track makes beat-to-beat irregularity, the mark of atrial fibrillation, a local feature.
    """
    starts = np.asarray(starts, dtype=np.int64)
    context = tracks.context
    last_beat = np.clip(np.searchsorted(context.r_peaks, starts + window) - 1, 0, max(len(context.r_peaks) - 1, 0))
    scale = context.amplitude_scale[last_beat][:, None] if len(context.r_peaks) else np.ones((len(starts), 1))
    ecg = np.clip(_slices(tracks.filtered, starts, window) / scale, -8.0, 8.0)
    rhythm = _slices(tracks.rhythm, starts, window)
    return np.stack([ecg, rhythm, _slices(tracks.rr_change, starts, window)], axis=1).astype(np.float32)


HR_GRID_BPM = 40.0 + 0.5 * np.arange(384)  # the heart rates a PPG model scores: 40-231.5 bpm in 0.5-bpm bins
PPG_SPECTRUM_CHANNELS = ("ppg_power", "accel_x_power", "accel_y_power", "accel_z_power", "accel_power",  # at each rate
                         "ppg_power_at_2f", "accel_power_at_2f", "ppg_power_at_half_f", "accel_power_at_half_f")
SPECTRUM_FFT = 2048  # zero-padded FFT: 0.94-bpm bins at 32 Hz, far finer than an 8-s window resolves (7.5 bpm)
SPECTRUM_FLOOR = 0.01  # in units of the channel's mean power on the grid: the log spectrum's floor
STILL_ACCEL_RMS = 0.05  # m/s^2: accelerometer motion below this is scaled as this much (a still wrist's noise is not
# amplified into motion)


def ppg_windows(ppg_and_accel_at_model_fs: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
    """(n, 9, len(HR_GRID_BPM)) inputs for PPG models: the spectra (ppg_spectra) of the band-passed PPG and 3-axis
    accelerometer windows."""
    return ppg_spectra(band_passed_ppg_windows(ppg_and_accel_at_model_fs, starts, window))


def band_passed_ppg_windows(ppg_and_accel_at_model_fs: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
    """(n, 4, window): the band-passed PPG and accelerometer x, y, z under each window, zero outside the signal."""
    filtered = ppg_bandpass()(ppg_and_accel_at_model_fs)
    return np.stack([_slices(filtered[:, c], starts, window) for c in range(filtered.shape[1])], axis=1)


def _interpolated(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """values (..., bins) linearly interpolated at fractional bin positions (-1: the last bin, there a zero pad)."""
    low = np.floor(positions).astype(np.int64)
    fraction = positions - low
    return values[..., low] * (1 - fraction) + values[..., low + 1] * fraction


def ppg_spectra(windows: np.ndarray, fs: float = PPG_FS) -> np.ndarray:
    """Band-passed (n, 4, window) PPG + accelerometer windows -> their log power spectra on HR_GRID_BPM.

    A heart-rate model reads the rate from a spectrum, so that a convolution over it scores every rate by the same
    rule: a rate no training subject reached is scored as well as a common one. Channels (PPG_SPECTRUM_CHANNELS):
    the PPG, each accelerometer axis and their sum (motion and its cadence), and the PPG and accelerometer power at
    twice and half each rate (a pulse has harmonics; arm swing runs at half the step rate). Each channel is scaled to
    mean 1 on the grid: PPG amplitude depends on sensor contact, not on the heart; the accelerometer's scale never
    falls below that of STILL_ACCEL_RMS of motion.
    """
    windows = np.asarray(windows, np.float64)
    tapered = (windows - windows.mean(axis=2, keepdims=True)) * np.hanning(windows.shape[2])
    power = np.abs(np.fft.rfft(tapered, SPECTRUM_FFT, axis=2)) ** 2
    power = np.concatenate([power, power[:, 1:].sum(axis=1, keepdims=True)], axis=1)  # (n, 5, bins)
    grid = _interpolated(power, HR_GRID_BPM * SPECTRUM_FFT / fs / 60.0)
    scale = grid.mean(axis=2, keepdims=True)
    # the grid's mean power of band-limited motion with STILL_ACCEL_RMS (Parseval, the power spread over the band)
    still = STILL_ACCEL_RMS ** 2 * np.sum(np.hanning(windows.shape[2]) ** 2) * (fs / 2) / (PPG_BAND_HZ[1] - PPG_BAND_HZ[0])
    scale[:, 1:] = np.maximum(scale[:, 1:], still)
    grid /= scale + 1e-12
    # the harmonics are read off the grid, zero beyond it: power outside the heart-rate band is not evidence
    step = HR_GRID_BPM[1] - HR_GRID_BPM[0]
    padded = np.pad(grid[:, [0, 4]], ((0, 0), (0, 0), (0, 1)))
    last = len(HR_GRID_BPM) - 1
    harmonics = []
    for factor in (2.0, 0.5):
        position = (HR_GRID_BPM * factor - HR_GRID_BPM[0]) / step
        harmonics.append(_interpolated(padded, np.where((position < 0) | (position > last), -1.0, position)))
    spectra = np.concatenate([grid, *harmonics], axis=1)
    return np.log(spectra + SPECTRUM_FLOOR).astype(np.float32)
