"""Signal-quality gate: finds stretches of raw signal no model should read, before any classification.

Problems (kinds), judged on the raw samples at the sensor rate:
- "nan": samples that are NaN or infinite (dropouts, transmission gaps).
- "flat_line": a lead-off or a stuck sensor: peak-to-peak under FLAT_MV (ECG; PPG: exactly constant) in
  every half-second block for at least FLAT_MIN_S.
- "clipping": the amplifier or ADC saturates: a run of at least CLIP_MIN_S of identical samples at the
  highest (or lowest) value of the surrounding 1.5 s, reached from and left to values at least
  CLIP_STEP_FRACTION of that stretch's range away within two samples (a clipped R wave). A quantised T-wave top or a flat
  baseline is not clipping: it is not the extreme, or it is entered one quantisation step at a time.
  PPG has no steep edges, so for PPG any run of CLIP_MIN_S_PPG at the extreme counts.
- "noise" (ECG only): a half-second block whose high-frequency noise, estimated from the median absolute
  second difference (robust to the QRS, which fills a small part of the block), is above NOISE_MV, or whose
  peak-to-peak is above RANGE_MV, far outside any ECG.

The gate works on half-second blocks aligned to absolute sample indices, each judged with one block of
context either side, so its output does not depend on how the stream is cut into chunks. Every problem is
a run of bad samples; the caller asks `problem(start, end)` before classifying anything in [start, end).
Reported events merge problems of one kind less than MERGE_S apart, and come twice: when the problem is
first known (end None, for a prompt alert) and when it is over (with its end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sdk.data.records import check_fs
from sdk.errors import HeartSightError

BLOCK_S = 0.5
FLAT_MV = 0.02  # about 4 MIT-BIH quantisation steps; the quietest clean ECG block on DS2 spans more
FLAT_MIN_S = 1.0
CLIP_MIN_S = 0.02  # and at least 3 samples; rounded S-wave troughs on DS2 stay flat for up to 17 ms
CLIP_MIN_S_PPG = 0.1
CLIP_STEP_FRACTION = 0.03
NOISE_MV = 0.1  # estimated standard deviation of white noise
RANGE_MV = 10.0
MERGE_S = 2.0
SIGNALS = ("ecg", "ppg")
_MAD_TO_SIGMA = 1.0 / (0.6745 * np.sqrt(6.0))  # median |second difference| of white noise -> its std


@dataclass(frozen=True)
class QualityEvent:
    """A quality problem over sensor samples [start, end); end is None while it is still going on."""

    kind: str
    start: int
    end: int | None


class QualityGate:
    """Feed raw chunks (1-D, sensor units: mV for ECG) with `process`; call `flush` at the end of the signal.

    `known_until`: the quality of every sample before it is decided (a block and its right-hand context
    must have arrived, and an unconfirmed flat stretch must have ended or lasted FLAT_MIN_S).
    """

    def __init__(self, fs: float, signal: str = "ecg"):
        check_fs(fs)
        if signal not in SIGNALS:
            raise HeartSightError(f"unknown signal {signal!r}; choose one of {', '.join(SIGNALS)}")
        self.fs, self.signal = float(fs), signal
        self.block = max(4, int(round(BLOCK_S * fs)))  # samples per block
        self._clip_min = max(3, int(round((CLIP_MIN_S if signal == "ecg" else CLIP_MIN_S_PPG) * fs)))
        self._flat_blocks = int(np.ceil(FLAT_MIN_S * fs / self.block))
        self._merge = int(round(MERGE_S * fs))
        self._buffer = np.zeros(0)  # raw samples from the start of the block before the next one
        self._buffer_start = 0
        self._n_seen = 0
        self._next = 0  # index of the next block to judge
        self._flat_start: int | None = None  # first sample of the current run of flat blocks
        self._flat_count = 0
        self._bad: list[list] = []  # [start, end, kind] runs of bad samples, oldest first
        self._open: dict[str, list[int]] = {}  # kind -> [start, end] of the reported problem still open
        self._flushed = False
        self.known_until = 0

    def process(self, chunk: np.ndarray) -> list[QualityEvent]:
        if self._flushed:
            raise HeartSightError("this QualityGate was flushed at the end of its signal; create a new one")
        x = np.asarray(chunk, dtype=np.float64)
        if x.ndim != 1:
            raise HeartSightError(f"the quality gate reads one channel: a 1-D chunk, got shape {x.shape}")
        self._buffer = np.concatenate([self._buffer, x])
        self._n_seen += x.size
        events: list[QualityEvent] = []
        while self._n_seen >= (self._next + 2) * self.block:  # the block and its right-hand context
            events += self._judge(self._next)
        return events

    def flush(self) -> list[QualityEvent]:
        """End of signal: judge what is left and close every open problem."""
        if self._flushed:
            return []
        self._flushed = True
        events: list[QualityEvent] = []
        while self._next * self.block < self._n_seen:
            events += self._judge(self._next)
        for kind in list(self._open):
            events.append(self._close(kind))
        self.known_until = self._n_seen
        return events

    def problem(self, start: int, end: int) -> str | None:
        """The kind of the first bad stretch overlapping samples [start, end), or None if they are clean."""
        for bad_start, bad_end, kind in self._bad:
            if bad_start < end and bad_end > start:
                return kind
        return None

    def window_problem(self, start: int, length: int, model_fs: float) -> str | None:
        """problem() of a model window of `length` samples from `start`, counted at the model's rate: every sensor
        sample it touches (the device path and analyze gate windows by this one rule)."""
        return self.problem(max(0, math.floor(start * self.fs / model_fs)),
                            max(0, math.ceil((start + length) * self.fs / model_fs)))

    def forget(self, before: int) -> None:
        """Drop bad stretches that end before this sample: nobody will ask about them again (bounded memory)."""
        self._bad = [b for b in self._bad if b[1] > before]

    def _judge(self, k: int) -> list[QualityEvent]:
        """Decide block k from the blocks either side of it."""
        b = self.block
        start, end = k * b, min((k + 1) * b, self._n_seen)
        context_start = max(0, start - b)
        context = self._buffer[context_start - self._buffer_start: min(end + b, self._n_seen) - self._buffer_start]
        block = context[start - context_start: end - context_start]
        finite = np.isfinite(block)
        events = []
        nan_runs = _runs(~finite)
        for run_start, run_end in nan_runs:
            events += self._mark("nan", start + run_start, start + run_end)
        values = block[finite]
        if values.size and (np.ptp(values) < FLAT_MV if self.signal == "ecg" else np.ptp(values) == 0):
            if self._flat_start is None:
                self._flat_start = start
            self._flat_count += 1
            if self._flat_count >= self._flat_blocks:
                events += self._mark("flat_line", self._flat_start, end)
        else:
            self._flat_start, self._flat_count = None, 0
            if self.signal == "ecg" and self._noisy(block):
                events += self._mark("noise", start, end)
            for run_start, run_end in self._clipped_runs(context, start - context_start, end - context_start):
                events += self._mark("clipping", context_start + run_start, context_start + run_end)
        for kind, (_, open_end) in list(self._open.items()):
            if end - open_end > self._merge:
                events.append(self._close(kind))
        self._next = k + 1
        unconfirmed_flat = self._flat_start is not None and self._flat_count < self._flat_blocks
        self.known_until = self._flat_start if unconfirmed_flat else end
        drop = max(0, end - b) - self._buffer_start  # keep one block of left-hand context
        self._buffer, self._buffer_start = self._buffer[drop:], self._buffer_start + drop
        return events

    def _noisy(self, block: np.ndarray) -> bool:
        second = np.abs(np.diff(block, 2))
        second = second[np.isfinite(second)]
        finite = block[np.isfinite(block)]
        if second.size < 8:
            return False
        return bool(np.median(second) * _MAD_TO_SIGMA > NOISE_MV or np.ptp(finite) > RANGE_MV)

    def _clipped_runs(self, context: np.ndarray, lo: int, hi: int) -> list[tuple[int, int]]:
        """Runs of identical samples at the context's extreme that overlap context[lo:hi], cut to it."""
        finite = context[np.isfinite(context)]
        if finite.size < 2 or finite.max() == finite.min():
            return []
        top, bottom = finite.max(), finite.min()
        step = CLIP_STEP_FRACTION * (top - bottom) if self.signal == "ecg" else 0.0
        change = np.flatnonzero(context[1:] != context[:-1]) + 1  # NaN differs from everything: runs of 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [context.size]])
        length = ends - starts
        keep = ((length >= self._clip_min) & (length <= self.block) & (starts > 1) & (ends < context.size - 1)
                & (starts < hi) & (ends > lo))
        s, e = starts[keep], ends[keep]
        # two samples either side: the last step into a clipped run can be anything from 0 to the slope
        value, before, after = context[s], context[s - 2], context[e + 1]
        at_top = (value == top) & (value - before > step) & (value - after > step)
        at_bottom = (value == bottom) & (before - value > step) & (after - value > step)
        chosen = at_top | at_bottom
        return [(max(a, lo), min(b, hi)) for a, b in zip(s[chosen].tolist(), e[chosen].tolist())]

    def _mark(self, kind: str, start: int, end: int) -> list[QualityEvent]:
        """Record bad samples [start, end) of a kind; returns the event that opens a new problem, if any."""
        last = next((b for b in reversed(self._bad) if b[2] == kind), None)
        if last is not None and last[1] >= start:
            last[1] = max(last[1], end)
        else:
            self._bad.append([start, end, kind])
        events = []
        if kind in self._open and start - self._open[kind][1] <= self._merge:
            self._open[kind][1] = max(self._open[kind][1], end)
        else:
            if kind in self._open:
                events.append(self._close(kind))
            self._open[kind] = [start, end]
            events.append(QualityEvent(kind, start, None))
        return events

    def _close(self, kind: str) -> QualityEvent:
        start, end = self._open.pop(kind)
        return QualityEvent(kind, start, end)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of every run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))
