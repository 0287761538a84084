"""Real-time R-peak detection for one ECG lead, after Pan & Tompkins (1985) and Hamilton & Tompkins (1986).

Pipeline: causal 5-15 Hz band-pass -> derivative -> squaring -> 150 ms moving-window integration (MWI).
Each MWI maximum that dominates +-200 ms around it is a candidate (this also enforces the 200 ms
refractory period). Adaptive signal and noise levels decide which candidates are beats; a candidate within
360 ms of a beat with under half its slope is that beat's T wave; when 1.66 mean RR pass without a beat,
the candidates since the last beat are judged again at half the threshold (search-back).

Streaming is exact: filter states carry over between chunks and every decision waits for the same fixed
amount of future signal, so the output does not depend on how the signal is cut into chunks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter1d
from scipy.signal import butter, group_delay, lfilter, sos2tf, sosfilt, sosfilt_zi

from sdk.data.records import check_fs
from sdk.errors import HeartSightError

QRS_BAND_HZ = (5.0, 15.0)  # QRS energy dominates here over P/T waves, baseline wander and mains hum
MWI_SECONDS = 0.15  # about the widest normal QRS
NEIGHBOURHOOD_SECONDS = 0.2  # a candidate is the MWI maximum this far each side: the refractory period
T_WAVE_SECONDS = 0.36  # a low-slope candidate this close to the last beat is its T wave
LEARNING_SECONDS = 2.0  # the initial signal and noise levels come from this much signal
# The threshold sits this far from the noise level towards the signal level. Pan-Tompkins' 0.25 missed
# small ectopic beats on DS1; 0.12 was chosen there (DS2 was not used to choose anything).
THRESHOLD_FRACTION = 0.12
SEARCH_BACK_RR = 1.66  # search back for missed beats after this many mean RR intervals without one
FAILED_SEARCH_DECAY = 0.5  # a search-back that finds nothing scales the signal level by this, so a
# signal that shrinks (electrode slipping) is found again instead of staying under an old threshold
DEFAULT_RR_SECONDS = 1.0  # mean RR assumed until two beats are found
RR_HISTORY = 8  # intervals in the mean RR
LOCATE_SECONDS = 0.05  # the R extremum is sought this far either side of the delay-corrected band-pass peak
BASELINE_SECONDS = 0.15  # half-width of the window whose median is the local baseline
MIN_FS = 40.0  # below this the 15 Hz band edge is too close to Nyquist


def qrs_bandpass(fs: float) -> tuple[np.ndarray, int]:
    """The detector's first-order 5-15 Hz band-pass (one SOS section) and its group delay in whole samples at the
    band's centre: also what the C detector is configured with (firmware_export.monitor_tables)."""
    sos = butter(1, QRS_BAND_HZ, btype="bandpass", fs=fs, output="sos")
    _, delay = group_delay(sos2tf(sos), w=[np.mean(QRS_BAND_HZ)], fs=fs)
    return sos, int(round(float(delay[0])))


@dataclass(frozen=True)
class _Candidate:
    """A maximum of the integrated signal, with what the beat rules need to know about it."""

    time: int  # sample of the MWI maximum, the candidate's place in the decision order
    height: float  # MWI value: the QRS energy
    slope: float  # steepest band-passed slope under the integration window
    r_index: int  # the R-wave extremum in the raw signal: what is reported


class RPeakDetector:
    """Streaming detector: feed chunks of raw ECG (any length, physical units, e.g. mV) at rate fs.

    Latency: a beat above the threshold is confirmed 0.3-0.4 s after its R wave (the MWI peaks ~0.1 s
    after the R wave and needs 0.2 s of signal after it to be a maximum). A beat under the threshold is
    only recovered when search-back fires, 1.66 mean RR after the previous beat: 0.66 RR + 0.3 s after an
    on-time beat, so within 1 s above ~57 bpm, more in slow rhythms (at most 1.28 s on MIT-BIH DS2 at the device rate, 128 Hz; 1.44 s at 360 Hz).
    Nothing is decided before 2 s of signal have set the initial levels, so beats in the first 2 s are
    confirmed at about 2 s.

    NaN and infinite samples are filtered as 0 so that a dropout cannot poison the filter state; a
    dropout can cost or fake a beat at its edges but never raises. Reporting dropouts is the job of the
    signal-quality gate.
    """

    def __init__(self, fs: float):
        check_fs(fs)
        if fs < MIN_FS:
            raise HeartSightError(f"sampling rate {fs:g} Hz is too low for R-peak detection; it needs at least {MIN_FS:g} Hz")
        self.fs = float(fs)
        self._sos, self._band_delay = qrs_bandpass(self.fs)
        self._mwi_len = self._samples(MWI_SECONDS)
        self._neighbourhood = self._samples(NEIGHBOURHOOD_SECONDS)
        self._t_wave = self._samples(T_WAVE_SECONDS)
        self._learning_len = self._samples(LEARNING_SECONDS)
        self._locate = self._samples(LOCATE_SECONDS)
        self._baseline = self._samples(BASELINE_SECONDS)
        # Future signal a candidate needs: its neighbourhood, and the raw windows that place its R wave.
        self._lookahead = max(self._neighbourhood, self._locate + self._baseline)
        # Past signal a candidate needs, counted back from the first one not yet found.
        self._history = self._neighbourhood + 1 + self._mwi_len + self._band_delay + self._locate + self._baseline

        self._band_state: np.ndarray | None = None  # set from the first sample so that its offset does not ring
        self._last_band = 0.0
        self._mwi_taps = np.full(self._mwi_len, 1.0 / self._mwi_len)
        self._mwi_state = np.zeros(self._mwi_len - 1)
        self._learning: list[np.ndarray] = []  # MWI of the learning period, summarised once it is complete
        self._n_seen = 0
        self._buffer_start = 0  # absolute index of the first sample kept in the buffers below
        self._raw = np.zeros(0)
        self._band = np.zeros(0)
        self._slope = np.zeros(0)
        self._mwi = np.zeros(0)
        self._scanned_until = 0  # every candidate before this sample has been found

        self._queue: deque[_Candidate] = deque()  # found, not yet judged
        self._since_beat: list[_Candidate] = []  # candidates judged noise since the last beat or search-back
        self._signal_level: float | None = None  # None until the learning period is over
        self._noise_level = 0.0
        self._rr: deque[int] = deque(maxlen=RR_HISTORY)
        self._last_beat: _Candidate | None = None
        self._search_from = 0  # the next search-back fires SEARCH_BACK_RR mean RR after this sample
        self._confirmed: list[int] = []
        self._flushed = False

    def _samples(self, seconds: float) -> int:
        return max(1, int(round(seconds * self.fs)))

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Returns int64 absolute sample indices (counted from the first sample ever fed, at rate fs) of
        R peaks confirmed by this chunk, increasing, never repeating earlier ones."""
        if self._flushed:
            raise HeartSightError("this RPeakDetector was flushed at the end of its signal; create a new one")
        x = _as_samples(chunk)
        if x.size:
            self._filter(x)
            self._find_candidates(until=self._n_seen - self._lookahead)
            self._decide(known_until=self._n_seen - self._lookahead)
        return self._take_confirmed()

    def flush(self) -> np.ndarray:
        """End of signal: returns any peaks still pending."""
        if not self._flushed:
            self._flushed = True
            if self._n_seen:
                self._find_candidates(until=self._n_seen)
                self._decide(known_until=self._n_seen)
        return self._take_confirmed()

    @property
    def settled_until(self) -> int:
        """Every R peak before this sample has been reported, and no later decision can add one.

        A candidate still queued, or judged noise but open to search-back, may yet become a beat at its R index;
        a candidate not yet found lies at or after the scanned point, and its R wave at most an integration
        window, the band-pass delay and the R search distance before it. The streaming runtime needs this to
        know when a beat's context (the beats before it) is final.
        """
        back = self._mwi_len + self._band_delay + self._locate
        pending = [c.r_index for c in self._queue] + [c.r_index for c in self._since_beat]
        return min([self._scanned_until - back, *pending])

    def _filter(self, x: np.ndarray) -> None:
        """Band-pass, differentiate, square and integrate one chunk, continuing from the previous one."""
        if self._band_state is None:
            self._band_state = sosfilt_zi(self._sos) * x[0]
        band, self._band_state = sosfilt(self._sos, x, zi=self._band_state)
        slope = np.diff(band, prepend=self._last_band) * self.fs
        self._last_band = band[-1]
        # An FIR in lfilter rather than a running cumsum, so that chunking cannot change the rounding.
        mwi, self._mwi_state = lfilter(self._mwi_taps, 1.0, slope**2, zi=self._mwi_state)
        if self._n_seen < self._learning_len:
            self._learning.append(mwi[: self._learning_len - self._n_seen])
        self._n_seen += x.size

        keep_from = max(self._buffer_start, self._scanned_until - self._history)
        drop = keep_from - self._buffer_start
        self._raw = np.concatenate([self._raw[drop:], x])
        self._band = np.concatenate([self._band[drop:], band])
        self._slope = np.concatenate([self._slope[drop:], np.abs(slope)])
        self._mwi = np.concatenate([self._mwi[drop:], mwi])
        self._buffer_start = keep_from

    def _find_candidates(self, until: int) -> None:
        """Queue each MWI sample before `until` that beats the previous 200 ms and is not beaten in the next."""
        if until <= self._scanned_until:
            return
        h = self._neighbourhood
        mwi = self._mwi
        # Windows are cut short only at the ends of the signal, never at a chunk boundary.
        max_before = maximum_filter1d(mwi, size=h + 1, origin=h // 2, mode="constant", cval=-np.inf)
        max_after = maximum_filter1d(mwi, size=h + 1, origin=-((h + 1) // 2), mode="constant", cval=-np.inf)
        local = np.arange(self._scanned_until, until) - self._buffer_start
        previous = np.where(local > 0, max_before[np.maximum(local - 1, 0)], -np.inf)
        is_peak = (mwi[local] > previous) & (mwi[local] >= max_after[local]) & (mwi[local] > 0)
        for i in local[is_peak]:
            self._queue.append(self._describe(int(i)))
        self._scanned_until = until

    def _describe(self, i: int) -> _Candidate:
        """Measure the candidate at buffer index i and place its R wave at the largest raw deflection."""
        window = slice(max(i - self._mwi_len, 0), i + 1)
        band_peak = window.start + int(np.argmax(np.abs(self._band[window])))
        centre = max(band_peak - self._band_delay, 0)
        raw = self._raw
        baseline = np.median(raw[max(centre - self._baseline, 0) : centre + self._baseline + 1])
        lo = max(centre - self._locate, 0)
        r_index = lo + int(np.argmax(np.abs(raw[lo : centre + self._locate + 1] - baseline)))
        return _Candidate(
            time=i + self._buffer_start,
            height=float(self._mwi[i]),
            slope=float(self._slope[window].max()),
            r_index=r_index + self._buffer_start,
        )

    def _decide(self, known_until: int) -> None:
        """Judge candidates and fire search-backs in time order; all candidates before known_until are found."""
        if self._signal_level is None:
            if self._n_seen < self._learning_len and not self._flushed:
                return
            learning = np.concatenate(self._learning)
            self._signal_level = float(learning.max()) / 3
            self._noise_level = float(learning.mean()) / 2
            self._learning = []
        while True:
            search_time = self._search_from + int(round(SEARCH_BACK_RR * self._mean_rr()))
            if self._queue and self._queue[0].time <= search_time:
                self._judge(self._queue.popleft())
            elif search_time < known_until:
                self._search_back(search_time)
            else:
                return

    def _threshold(self) -> float:
        return self._noise_level + THRESHOLD_FRACTION * (self._signal_level - self._noise_level)

    def _mean_rr(self) -> float:
        return float(np.mean(self._rr)) if self._rr else DEFAULT_RR_SECONDS * self.fs

    def _may_be_beat(self, candidate: _Candidate) -> bool:
        """False inside the refractory period of the last beat and for its T wave."""
        last = self._last_beat
        if last is None:
            return True
        after = candidate.r_index - last.r_index
        is_t_wave = after < self._t_wave and candidate.slope < 0.5 * last.slope
        return after >= self._neighbourhood and not is_t_wave

    def _judge(self, candidate: _Candidate) -> None:
        if candidate.height > self._threshold() and self._may_be_beat(candidate):
            self._signal_level += 0.125 * (candidate.height - self._signal_level)
            self._accept(candidate)
        else:
            self._noise_level += 0.125 * (candidate.height - self._noise_level)
            self._since_beat.append(candidate)

    def _search_back(self, search_time: int) -> None:
        """A beat is overdue: judge the noise candidates since the last beat again at half the threshold."""
        half_threshold = 0.5 * self._threshold()
        pool, self._since_beat = self._since_beat, []
        self._search_from = search_time
        found = False
        for candidate in pool:
            if candidate.height > half_threshold and self._may_be_beat(candidate):
                self._signal_level += 0.25 * (candidate.height - self._signal_level)
                self._accept(candidate)
                found = True
        if not found:
            self._signal_level *= FAILED_SEARCH_DECAY

    def _accept(self, beat: _Candidate) -> None:
        if self._last_beat is not None:
            self._rr.append(beat.r_index - self._last_beat.r_index)
        self._last_beat = beat
        self._search_from = beat.time
        self._since_beat.clear()
        self._confirmed.append(beat.r_index)

    def _take_confirmed(self) -> np.ndarray:
        peaks = np.asarray(self._confirmed, dtype=np.int64)
        self._confirmed = []
        return peaks


def _as_samples(chunk: np.ndarray) -> np.ndarray:
    """The chunk as float64 with NaN/inf set to 0 (see RPeakDetector); anything but 1-D numbers is refused."""
    x = np.asarray(chunk)
    if x.ndim != 1 or x.dtype.kind not in "iuf":
        raise HeartSightError(f"an ECG chunk must be a 1-D array of numbers, got shape {x.shape} and dtype {x.dtype}")
    x = x.astype(np.float64)
    x[~np.isfinite(x)] = 0.0
    return x


def detect_r_peaks(ecg: np.ndarray, fs: float) -> np.ndarray:
    """Offline use = one RPeakDetector fed the whole signal then flushed (one implementation, so offline and
    streaming give identical results)."""
    detector = RPeakDetector(fs)
    return np.concatenate([detector.process(ecg), detector.flush()])


def match_peaks(reference: np.ndarray, detected: np.ndarray, tolerance_samples: int) -> tuple[int, int, int]:
    """Pair reference and detected peaks one-to-one within the tolerance, closest pairs first.

    Returns (true positives, false negatives, false positives).
    """
    reference = np.sort(np.asarray(reference, dtype=np.int64))
    detected = np.sort(np.asarray(detected, dtype=np.int64))
    first = np.searchsorted(detected, reference - tolerance_samples, side="left")
    last = np.searchsorted(detected, reference + tolerance_samples, side="right")
    pairs = sorted(
        (abs(int(detected[j]) - int(r)), i, j)
        for i, r in enumerate(reference)
        for j in range(first[i], last[i])
    )
    matched_reference, matched_detected = set(), set()
    for _, i, j in pairs:
        if i not in matched_reference and j not in matched_detected:
            matched_reference.add(i)
            matched_detected.add(j)
    tp = len(matched_reference)
    return tp, reference.size - tp, detected.size - tp
