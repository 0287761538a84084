"""The device runtime: analyses a signal as it arrives, gates it on signal quality and raises explained alerts.

`Monitor(...).feed(chunk)` returns the events that chunk completed; `finish()` ends the signal. The path is
sdk.device.analyze's, streamed: resample to the model rate -> (ECG) the streaming R-peak detector ->
sdk.data.preprocess -> the model on a backend -> its explanation trace. Every stage keeps its state between
chunks and decides only when the signal it needs has arrived, so the result does not depend on how the
signal is cut into chunks, and it equals analyze() on the whole recording (the beat context uses past beats
only; the one difference: a rhythm window before the first R peak is scaled by 1, not by that later beat).

Events (`Event`), in time order per kind; sample indices are at the sensor rate:
- BeatEvent: one R peak, its class and the saliency trace of that class over the model window.
- WindowEvent: one window of a window model, its rhythm class or heart rate, and the trace likewise.
  A beat or window that overlaps a signal-quality problem is not classified: `quality` names the problem.
- QualityEvent (sdk.device.quality): a signal-quality problem; once when it is found (end None) and once when
  it is over.
- AlertEvent: an Alert the policy raised (sdk.device.alerts); sdk.stream.payload.encode_alert writes it for the
  wire.

Latency: a beat is classified once the signal 3 s past it is settled (the model window, the R-peak
detector's confirmation, the resampler's look-ahead of ~80 ms): 3.6-4.1 s after its R wave on synthetic ECG
at 50-120 bpm, more after long pauses; a window once its end is settled (an `ecg_af` window 3 s later: its RR
evidence leaves out the V and F beats, and its last beats are classified once their own beat windows are).
Memory is bounded by the model window plus that latency (and a few seconds of raw signal for alert excerpts).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import numpy as np
import torch
from scipy.signal import resample_poly

from firmware_export.head_update import HeadUpdate
from models.heart_rate import HeartRateTracker, rate_evidence
from models.rr_af import ectopic_beats, with_evidence
from sdk.data import preprocess, rr_features
from sdk.data.records import check_fs, resample_factors, resample_filter, resampled_index
from sdk.data.rpeak import RPeakDetector
from sdk.device.alerts import Alert, AlertPolicy, Excerpt, Finding
from sdk.device.analyze import trace_at_input_rate
from sdk.device.backends import ModelRef, Runner, make_runner
from sdk.device.names import check_name
from sdk.device.quality import QualityEvent, QualityGate
from sdk.errors import HeartSightError

REACH = int(4 * preprocess.BUMP_SIGMA)  # a beat's rhythm-track bump reaches this far: a window needs the beats
# this far past its end
# A sample beyond this (mV) is no heartbeat but a wrong unit or garbage: it is taken as a dropout, as NaN is (held
# at the last finite value, reported by the quality gate), so that no filter or statistic sees it (hs_monitor.c too).
MAX_ABS_MV = 1.0e6
RAW_MARGIN_S = 5.0  # raw signal kept beyond excerpt_s for signal-quality alerts, which come up to ~3 s late
# Classified beats remembered for alerts' beat marks: the model's task forgets beats its windows no longer read, but
# an isolated V alert is raised a beat later and a run's at its end (at most SUSTAINED_RUN_S plus its excerpts).
BEAT_MARKS_S = 120.0


@dataclass(frozen=True, eq=False)
class BeatEvent:
    """One R peak and its class."""

    sample: int  # the R peak
    time_s: float
    window_start: int  # where the model window, and the trace, begin
    label: str | None  # None: not classified, see quality
    p: float | None  # the label's probability
    trace: np.ndarray | None  # float32 saliency of the label over the model window, at the sensor rate
    quality: str | None = None  # the signal-quality problem under the window, if any


@dataclass(frozen=True, eq=False)
class WindowEvent:
    """One window of a window model: its rhythm class (label, p) or its heart rate (hr_bpm)."""

    start_sample: int  # where the window, and the trace, begin
    end_sample: int
    start_s: float
    end_s: float
    label: str | None = None
    p: float | None = None
    hr_bpm: float | None = None
    trace: np.ndarray | None = None  # float32 saliency over the window, at the sensor rate
    quality: str | None = None  # the signal-quality problem under the window, if any
    padded_s: float = 0.0  # a stream's last, shorter window (rhythm models): seconds of zeros after its end
    rhythm_evidence: float | None = None  # what the RR irregularity added to the AF logit (models.rr_af)


@dataclass(frozen=True)
class AlertEvent:
    alert: Alert


Event = BeatEvent | WindowEvent | QualityEvent | AlertEvent


class StreamResampler:
    """sdk.data.records.resample (scipy's resample_poly) applied chunk by chunk, with an identical result.

    Overlap-save: each output sample is computed once all input samples under its filter have arrived
    (a look-ahead of 10 * max(up, down) / up input samples, 28 at 360 -> 128 Hz), from a buffer that starts
    on a multiple of `down` so the polyphase grid lines up with the whole signal's. Before the first sample
    and after the last (at flush), the input counts as zero, as in resample_poly.
    """

    def __init__(self, fs_in: float, fs_out: float, channels: int):
        self.up, self.down = resample_factors(fs_in, fs_out)
        self._half = 10 * max(self.up, self.down)
        if self.up != self.down:  # at the model's own rate samples pass through (a cutoff at Nyquist is no filter)
            self._filter = resample_filter(self.up, self.down)
        self._buffer = np.zeros((0, channels), np.float32)
        self._buffer_start = 0  # absolute index of the buffer's first input sample: a multiple of `down`
        self._n_in = 0
        self._n_out = 0

    def process(self, x: np.ndarray) -> np.ndarray:
        self._n_in += len(x)
        if self.up == self.down:
            self._n_out = self._n_in
            return x
        self._buffer = np.concatenate([self._buffer, x])
        # output n is complete when its last input, (n * down + half) / up, has arrived
        return self._emit(max(0, ((self._n_in - 1) * self.up - self._half) // self.down + 1))

    def flush(self) -> np.ndarray:
        if self.up == self.down:
            return np.zeros((0, self._buffer.shape[1]), np.float32)
        return self._emit(-(-self._n_in * self.up // self.down))

    def _emit(self, until: int) -> np.ndarray:
        """Outputs [n_out, until); then drops the inputs no later output needs."""
        if until <= self._n_out:
            return np.zeros((0, self._buffer.shape[1]), np.float32)
        y = resample_poly(self._buffer, self.up, self.down, axis=0, window=self._filter)
        first = self._buffer_start * self.up // self.down
        out = y[self._n_out - first: until - first].astype(np.float32)
        self._n_out = until
        needed = max(0, math.ceil((until * self.down - self._half) / self.up))
        keep_from = needed // self.down * self.down
        self._buffer = self._buffer[keep_from - self._buffer_start:]
        self._buffer_start = keep_from
        return out


class _Samples:
    """A stream of samples (rows) of which only a recent stretch is kept, addressed by absolute index."""

    def __init__(self, channels: int):
        self.data = np.zeros((0, channels), np.float32)
        self.start = 0

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    def append(self, x: np.ndarray) -> None:
        self.data = np.concatenate([self.data, x])

    def slice(self, a: int, b: int) -> np.ndarray:
        """Rows [a, b): zero before the signal's first sample and past the last one received."""
        if 0 <= a < self.start:
            raise RuntimeError(f"samples from {a} were requested after being dropped (kept from {self.start})")
        out = np.zeros((b - a, self.data.shape[1]), np.float32)
        lo, hi = max(a, self.start), min(b, self.end)
        if lo < hi:
            out[lo - a: hi - a] = self.data[lo - self.start: hi - self.start]
        return out

    def drop_before(self, index: int) -> None:
        cut = min(max(index - self.start, 0), len(self.data))
        self.data, self.start = self.data[cut:], self.start + cut


class Monitor:
    """Streaming analysis of one sensor: feed(chunk) -> events, finish() -> the last events.

    model: a zoo name, model directory or exported int8 directory (or a ZooModel, Int8Artifact or Runner).
    fs: the sensor rate in Hz. backend: torch, onnxruntime or c (default: c for an export, torch otherwise);
    the int8 backends run the model's export as it is (sdk.device.backends). device, site: names for the alerts.
    start_time: aware datetime of the first sample (default now, UTC). stream_id: which recording or session of the
    device this is (default: start_time as ISO text); with the device, site, model, sample and type it makes each
    alert's id (sdk.device.alerts.alert_id), so analysing the same stream again raises alerts with the same ids, which
    the clinician's store keeps once, and another stream's alerts never share one. excerpt_s: signal shown each side
    of a beat in beat alerts (at most half the model window, which the trace covers) and before a signal-quality
    problem in its alert.
    Chunks: ECG models take 1-D arrays (samples,) in mV; ppg_hr takes (samples, 4) PPG and accelerometer
    x, y, z, or PPG alone (accelerometer taken as zero: a still wrist).
    """

    def __init__(self, model: ModelRef | Runner = "ecg_beat", fs: float = 360.0, backend: str | None = None,
                 device: str = "device", site: str = "default", start_time: datetime | None = None,
                 stream_id: str | None = None, excerpt_s: float = 3.0):
        check_fs(fs)
        check_name("device", device)
        check_name("site", site)
        start_time = start_time or datetime.now(timezone.utc)
        if start_time.tzinfo is None:
            raise HeartSightError("start_time has no time zone: pass an aware datetime, e.g. datetime.now(timezone.utc)")
        stream_id = start_time.isoformat() if stream_id is None else stream_id
        if not isinstance(stream_id, str) or not stream_id:
            raise HeartSightError(f"stream_id must be a non-empty string naming the recording or session, got "
                                  f"{stream_id!r}")
        self.runner = model if isinstance(model, Runner) else make_runner(model, backend)
        self.spec = spec = self.runner.spec
        preprocess.check_input_rate(fs, spec.task)
        if not isinstance(excerpt_s, numbers.Real) or not 0 < excerpt_s <= spec.window / spec.fs / 2:
            raise HeartSightError(f"excerpt_s must be in (0, {spec.window / spec.fs / 2:g}] s (half the model window), "
                                  f"got {excerpt_s!r}")
        self.fs, self.backend = float(fs), self.runner.backend
        self._excerpt = int(round(excerpt_s * fs))
        self._task = _TASKS[spec.task](self)
        channels = self._task.channels
        self._gate = QualityGate(fs, self._task.signal)
        self._resampler = StreamResampler(fs, spec.fs, channels)
        self._filter = self._task.bandpass(spec.fs)
        self._raw = _Samples(channels)  # at the sensor rate, non-finite samples held at the last finite one
        self._filtered = _Samples(channels)  # band-passed, at the model rate
        self._last_finite = np.zeros(channels, np.float32)
        self._n_in = 0
        self._beat_labels: dict[int, str | None] = {}  # sensor R peaks classified in the last BEAT_MARKS_S: class
        self._finished = False
        self.model_info = dict(self.runner.identity)
        self.stream_id = stream_id
        self.policy = AlertPolicy(fs=self.fs, device=device, site=site, stream=stream_id, start_time=start_time,
                                  model=self.model_info)

    def set_head(self, blob: bytes, key: bytes) -> HeadUpdate:
        """Replace the model's head by a signed update for this device (firmware_export.head_update), on the int8
        backends; the beats and windows classified from now on use it and their alerts carry its version. A refused
        update raises HeadRefused (a HeartSightError naming the reason) and the head in use stays."""
        update = self.runner.set_head(blob, key)
        self.model_info["head_version"] = update.version  # the alert policy's (each alert keeps a copy)
        return update

    def feed(self, chunk: np.ndarray) -> list[Event]:
        """Analyse the next samples; returns the events they complete."""
        if self._finished:
            raise HeartSightError("this Monitor has finished its signal; create a new one")
        x = self._checked(chunk)
        if not len(x):
            return []
        x = np.where(np.abs(x) > np.float32(MAX_ABS_MV), np.float32(np.nan), x)
        clean = self._hold_last_finite(x)
        self._raw.append(clean)
        self._n_in += len(x)
        events = self._quality(self._gate.process(x[:, 0]))
        return events + self._analyse(self._resampler.process(clean))

    def finish(self) -> list[Event]:
        """End of the signal: the remaining beats and windows (zero-padded as analyze pads), and open problems."""
        if self._finished:
            return []
        self._finished = True
        events = self._quality(self._gate.flush())
        events += self._analyse(self._resampler.flush())
        return events + [AlertEvent(self._with_beats(a)) for a in self.policy.finish()]

    def _checked(self, chunk: np.ndarray) -> np.ndarray:
        x = np.asarray(chunk)
        if x.dtype.kind not in "iuf":
            raise HeartSightError(f"a chunk must hold numbers, got dtype {x.dtype}")
        if x.ndim == 2 and x.shape[1] == 1:
            x = x[:, 0]
        if self._task.channels == 1:
            if x.ndim != 1:
                raise HeartSightError(f"{self.spec.name} reads one ECG lead: a chunk must be 1-D (samples,), "
                                      f"got shape {x.shape}")
            return x.astype(np.float32)[:, None]
        if x.ndim == 1:
            return np.concatenate([x.astype(np.float32)[:, None], np.zeros((len(x), 3), np.float32)], axis=1)
        if x.ndim != 2 or x.shape[1] != 4:
            raise HeartSightError(f"{self.spec.name} reads PPG and accelerometer x, y, z: a chunk must be (samples, 4) "
                                  f"or PPG alone (samples,), got shape {x.shape}")
        return x.astype(np.float32)

    def _hold_last_finite(self, x: np.ndarray) -> np.ndarray:
        """Non-finite samples take the last finite value, so that no filter state is poisoned by a dropout
        (the quality gate has already flagged them, and nothing overlapping them is classified)."""
        finite = np.isfinite(x)
        if not finite.all():
            padded = np.concatenate([self._last_finite[None], x])
            rows = np.where(np.concatenate([np.ones((1, x.shape[1]), bool), finite]), np.arange(len(padded))[:, None], 0)
            x = np.take_along_axis(padded, np.maximum.accumulate(rows, axis=0), axis=0)[1:]
        self._last_finite = x[-1].copy()
        return x

    def _quality(self, problems: list[QualityEvent]) -> list[Event]:
        events: list[Event] = []
        for problem in problems:
            events.append(problem)
            if problem.end is None:
                # up to half a second of the problem: the gate reports it with at least that much signal past
                # its start, so the excerpt does not depend on chunking
                lo = max(problem.start - self._excerpt, 0)
                hi = min(problem.start + min(self._excerpt, self._gate.block), self._n_in)
                signal = self._raw.slice(lo, hi)[:, 0]
                excerpt = Excerpt(lo, signal, np.zeros(len(signal)))
                events += [AlertEvent(a) for a in self.policy.quality(problem.kind, problem.start, excerpt)]
        return events

    def _analyse(self, y: np.ndarray) -> list[Event]:
        """Model-rate samples in: filter, let the task find what it needs (R peaks), classify whatever is ready,
        forget what is done."""
        if len(y):
            self._filtered.append(self._filter(y))
        self._task.take(y)
        starts, inputs = self._task.ready()
        events = self._classify(starts, inputs) if len(starts) else []
        self._forget()
        return events

    def _ready(self, end: int) -> bool:
        """Whether a window ending at this model-rate sample has everything it needs: the filtered signal,
        what the task reads besides it (beats, and the bumps of the beats just past it), and the quality of its
        raw samples."""
        if self._finished:
            return True
        return (self._filtered.end >= end and self._gate.known_until >= self._to_sensor(end, math.ceil)
                and self._task.settled_until() >= end + REACH)

    def _classify(self, starts: np.ndarray, inputs: np.ndarray) -> list[Event]:
        """Gate, run and explain the windows starting at these model-rate samples; events and alerts in order."""
        spec = self.spec
        problems = [self._gate.window_problem(int(s), spec.window, spec.fs) or self._task.problem(int(s))
                    for s in starts]
        good = np.array([p is None for p in problems])
        outputs, traces = self._run(inputs[good]) if good.any() else (None, None)
        embeddings = self._task.embeddings(inputs[good], outputs) if good.any() else {}
        events: list[Event] = []
        k = 0
        for start, problem in zip(starts.tolist(), problems):
            window_start = int(round(start * self.fs / spec.fs))
            if problem is None:
                event, finding = self._task.classified(start, window_start, outputs[k], traces[k])
                if k in embeddings:
                    finding = replace(finding, embedding=embeddings[k])
                k += 1
            else:
                event, finding = self._task.gated(start, window_start, problem)
            events.append(event)
            if isinstance(event, BeatEvent):
                self._beat_labels[event.sample] = event.label
            events += [AlertEvent(self._with_beats(a)) for a in self._task.alerts(finding)]
        return events

    def _with_beats(self, alert: Alert) -> Alert:
        """The alert with the R peaks in its excerpt as details["beats"]: [[sample, class or None], ...], for the
        clinician's view (a beat after the alert's is not classified yet). Every one of them is settled by the time
        an alert is raised, so the marks do not depend on how the signal is cut into chunks."""
        lo = alert.excerpt.start
        hi = lo + len(alert.excerpt.signal)
        peaks = sorted({p for p in [*self._beat_labels, *self._task.r_peaks_at_sensor_rate()] if lo <= p < hi})
        if not peaks:
            return alert
        beats = [[p, self._beat_labels.get(p)] for p in peaks]
        return replace(alert, details={**alert.details, "beats": beats})

    def _excerpt_of(self, window_start: int, trace: np.ndarray, beat: int | None = None) -> Excerpt:
        """The raw signal under the model window (around a beat: excerpt_s each side), cut to the signal, and
        its trace."""
        lo, hi = window_start, window_start + len(trace)
        if beat is not None:
            lo, hi = max(lo, beat - self._excerpt), min(hi, beat + self._excerpt + 1)
        lo, hi = max(lo, 0), min(hi, self._n_in)
        signal = self._raw.slice(lo, hi)[:, 0].astype(np.float64)
        return Excerpt(lo, signal, trace[lo - window_start: hi - window_start])

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Outputs and traces."""
        return self._in_any_batch(self.runner.explain, x)

    def _in_any_batch(self, function, x: np.ndarray):
        """function(x) (an array or a tuple of them, row per window). Unless the backend is batch-invariant, a lone
        window runs beside a zero one, so results never depend on how many windows a chunk completed."""
        if len(x) != 1 or self.runner.batch_invariant:
            return function(x)
        result = function(np.concatenate([x, np.zeros_like(x)]))
        return tuple(part[:1] for part in result) if isinstance(result, tuple) else result[:1]

    def _to_sensor(self, model_sample: int, rounding) -> int:
        return max(0, int(rounding(model_sample * self.fs / self.spec.fs)))

    def _forget(self) -> None:
        """Drop what no pending or future beat, window or alert needs."""
        keep_from = self._task.keep_from()
        if keep_from is None:
            return
        self._filtered.drop_before(keep_from)
        self._task.forget(keep_from)
        sensor_keep = min(self._to_sensor(keep_from, math.floor),
                          self._n_in - self._excerpt - int(RAW_MARGIN_S * self.fs))
        self._raw.drop_before(sensor_keep)
        self._gate.forget(sensor_keep)
        for sample in [s for s in self._beat_labels if s < self._n_in - BEAT_MARKS_S * self.fs]:
            del self._beat_labels[sample]


class _Task:
    """What differs between the kinds of model on the stream: what it reads, which windows are ready and what
    their outputs mean. The Monitor picks one per model task (_TASKS) and keeps the rest in common."""

    signal, channels = "ecg", 1  # for the quality gate; channels per sample
    bandpass = staticmethod(preprocess.ecg_bandpass)

    def __init__(self, monitor: Monitor):
        self.monitor, self.spec = monitor, monitor.spec
        self.window_samples = int(round(self.spec.window * monitor.fs / self.spec.fs))  # at the sensor rate

    def take(self, y: np.ndarray) -> None:
        """Model-rate samples have arrived (and are filtered): find what the task reads besides them."""

    def settled_until(self) -> float:
        """Model-rate sample before which what take() finds is complete."""
        return math.inf

    def ready(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Model-rate starts of the windows that can now be classified, and their model inputs."""
        raise NotImplementedError

    def classified(self, start: int, window_start: int, output: np.ndarray, trace: np.ndarray
                   ) -> tuple[Event, Finding]:
        """The event and the policy's finding of a window the model ran on (its trace as the model gives it)."""
        raise NotImplementedError

    def at_sensor_rate(self, trace: np.ndarray) -> np.ndarray:
        """A trace over the model window, at the sensor rate: what events and excerpts carry."""
        return trace_at_input_rate(trace, self.spec, self.monitor.fs)

    def gated(self, start: int, window_start: int, problem: str) -> tuple[Event, Finding]:
        """The same for a window the quality gate kept from the model."""
        raise NotImplementedError

    def problem(self, start: int) -> str | None:
        """Why the window from this model-rate sample cannot be judged besides its signal quality, if it cannot."""
        return None

    def alerts(self, finding: Finding) -> list[Alert]:
        raise NotImplementedError

    def embeddings(self, x: np.ndarray, outputs: np.ndarray) -> dict[int, np.ndarray]:
        """Embeddings the task's alerts carry, by row of x (none but for beats)."""
        return {}

    def r_peaks_at_sensor_rate(self) -> list[int]:
        """The R peaks found in the kept signal, as sensor samples (none without ECG)."""
        return []

    def keep_from(self) -> int | None:
        """Model-rate sample before which no pending or future window reads the signal; None: keep everything."""
        raise NotImplementedError

    def forget(self, keep_from: int) -> None:
        """Drop what only the signal before keep_from needed."""


class _EcgTask(_Task):
    """ECG models read R peaks, found by the streaming detector, and each beat's context from past beats."""

    def __init__(self, monitor: Monitor):
        super().__init__(monitor)
        self.detector = RPeakDetector(self.spec.fs)
        self.beats = preprocess.BeatContextBuilder()  # at the model rate, oldest kept first
        self._reach = int(round(preprocess.R_SEARCH_S * self.spec.fs))

    def take(self, y: np.ndarray) -> None:
        peaks = self.detector.process(y[:, 0]) if len(y) else np.zeros(0, np.int64)
        if self.monitor._finished:
            peaks = np.concatenate([peaks, self.detector.flush()])
        for r in peaks.tolist():
            near = self.monitor._filtered.slice(r - self._reach, r + self._reach + 1)[:, 0]
            self.beats.add(r, preprocess.r_amplitudes(near, np.array([self._reach]), self.spec.fs)[0])

    def settled_until(self) -> float:
        return math.inf if self.monitor._finished else self.detector.settled_until

    def r_peaks_at_sensor_rate(self) -> list[int]:
        return resampled_index(np.array(self.beats.r_peaks), self.spec.fs, self.monitor.fs).tolist()

    def tracks(self, lo: int, hi: int) -> preprocess.EcgTracks:
        """preprocess.EcgTracks of model-rate samples [lo, hi), beat positions counted from lo, with the
        kept beats' context; the tracks are zero outside the signal, as offline."""
        kept = self.beats.context()
        context = preprocess.BeatContext(kept.r_peaks - lo, kept.rr_relative, kept.rr_change, kept.amplitude_scale)
        absolute = np.arange(lo, hi)
        filtered = self.monitor._filtered
        outside = (absolute < 0) | (absolute >= (filtered.end if self.monitor._finished else hi))
        rhythm = preprocess.bump_track(hi - lo, context.r_peaks, context.rr_relative)
        change = preprocess.bump_track(hi - lo, context.r_peaks, context.rr_change)
        rhythm[outside], change[outside] = 0, 0
        return preprocess.EcgTracks(filtered.slice(lo, hi)[:, 0], rhythm, change, context)

    def forget(self, keep_from: int) -> None:
        """Beats whose bumps cannot reach the kept signal, but the last one before it (a rhythm window's scale)."""
        old = sum(1 for r in self.beats.r_peaks if r < keep_from - REACH) - 1
        if old > 0:
            self.beats.forget(old)


class _BeatTask(_EcgTask):
    """Beat models: a window centred on every R peak, classified once the signal to its end is settled."""

    def __init__(self, monitor: Monitor):
        super().__init__(monitor)
        self.next_beat = 0  # index in self.beats of the next beat to classify

    def ready(self) -> tuple[np.ndarray, np.ndarray | None]:
        half, window = self.spec.window // 2, self.spec.window
        r_peaks, first = self.beats.r_peaks, self.next_beat
        while self.next_beat < len(r_peaks) and self.monitor._ready(r_peaks[self.next_beat] - half + window):
            self.next_beat += 1
        starts = np.array(r_peaks[first: self.next_beat], np.int64) - half
        if not len(starts):
            return starts, None
        tracks = self.tracks(starts.min(), starts.max() + window)
        return starts, preprocess.beat_windows(tracks, np.arange(first, self.next_beat), window)

    def classified(self, start, window_start, output, trace) -> tuple[BeatEvent, Finding]:
        sample, trace = self._sample(start), self.at_sensor_rate(trace)
        label, p = _label(self.spec, output)
        excerpt = self.monitor._excerpt_of(window_start, trace, beat=sample)
        return (BeatEvent(sample, round(sample / self.monitor.fs, 3), window_start, label, round(p, 4), trace),
                Finding(sample, window_start + self.window_samples, label, p, excerpt))

    def gated(self, start, window_start, problem) -> tuple[BeatEvent, Finding]:
        sample = self._sample(start)
        return (BeatEvent(sample, round(sample / self.monitor.fs, 3), window_start, None, None, None, problem),
                Finding(sample, window_start + self.window_samples, None, 0.0, None))

    def alerts(self, finding: Finding) -> list[Alert]:
        return self.monitor.policy.beat(finding)

    def embeddings(self, x: np.ndarray, outputs: np.ndarray) -> dict[int, np.ndarray]:
        """The embeddings of the beats not called N (those that can alert), for the alerts to carry."""
        ectopic = np.flatnonzero(outputs.argmax(1) != self.spec.outputs.index("N"))
        if not len(ectopic):
            return {}
        return dict(zip(ectopic.tolist(), self.monitor._in_any_batch(self.monitor.runner.embed, x[ectopic])))

    def keep_from(self) -> int | None:
        pending = self.beats.r_peaks[self.next_beat:]
        first_needed = min(pending[0] if pending else math.inf, self.settled_until())
        return None if math.isinf(first_needed) else int(first_needed) - self.spec.window // 2 - REACH

    def forget(self, keep_from: int) -> None:
        kept = len(self.beats.r_peaks)
        super().forget(keep_from)
        self.next_beat -= kept - len(self.beats.r_peaks)  # the forgotten beats were all classified

    def _sample(self, start: int) -> int:
        """The sensor sample of the R peak at the centre of the window starting at this model-rate sample."""
        at_sensor_rate = resampled_index(start + self.spec.window // 2, self.spec.fs, self.monitor.fs)
        return int(np.clip(at_sensor_rate, 0, self.monitor._n_in - 1))


class _WindowTask(_Task):
    """Window models: a window every `hop` model samples, classified once its end is settled."""

    lookahead = 0  # model-rate samples past a window's end that must be settled before it is classified

    def __init__(self, monitor: Monitor):
        super().__init__(monitor)
        self.next_window = 0  # model-rate start of the next window to classify

    def inputs(self, starts: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def ready(self) -> tuple[np.ndarray, np.ndarray | None]:
        window, hop, starts = self.spec.window, self.spec.hop, []
        while (self.next_window + window <= self.monitor._filtered.end
               and self.monitor._ready(self.next_window + window + self.lookahead)):
            starts.append(self.next_window)
            self.next_window += hop
        end = self.monitor._filtered.end
        if self.monitor._finished and self.next_window < end and \
                self.next_window in preprocess.window_starts(end, window, hop, self.spec.task, self.spec.fs):
            starts.append(self.next_window)  # the last, zero-padded window, as offline
            self.next_window += hop
        starts = np.array(starts, np.int64)
        return starts, self.inputs(starts) if len(starts) else None

    def gated(self, start, window_start, problem) -> tuple[WindowEvent, Finding]:
        return (self._event(start, window_start, quality=problem),
                Finding(window_start, window_start + self.window_samples, None, 0.0, None))

    def keep_from(self) -> int:
        return self.next_window - REACH

    def _event(self, start: int, window_start: int, **result) -> WindowEvent:
        end, fs = start + self.spec.window, self.spec.fs
        padding = max(end - self.monitor._filtered.end, 0) if self.monitor._finished else 0
        return WindowEvent(window_start, int(round(end * self.monitor.fs / fs)), round(start / fs, 3),
                           round(end / fs, 3), padded_s=round(padding / fs, 3), **result)

    def _finding(self, window_start: int, trace: np.ndarray, label: str, confidence: float,
                    hr_bpm: float | None = None) -> Finding:
        excerpt = self.monitor._excerpt_of(window_start, trace)
        return Finding(window_start, window_start + self.window_samples, label, confidence, excerpt, hr_bpm)


class _RhythmTask(_WindowTask, _EcgTask):
    """Rhythm models (ecg_af): windows of ECG with the beats' rhythm tracks, classified; with the RR evidence of
    the beats up to each window's end, when the model has it."""

    def __init__(self, monitor: Monitor):
        super().__init__(monitor)
        self.evidence = monitor.runner.rhythm_evidence
        self.beat_runner = monitor.runner.beat_runner
        # a beat is classified once its own beat window is settled: up to half a beat window past a rhythm window
        self.lookahead = self.beat_runner.spec.window // 2 if self.beat_runner is not None else 0
        self.rhythm_beats: list[int] = []  # model-rate R peaks the RR evidence of the next windows reads
        self.rhythm_ectopic: list[bool] = []  # whether each of the first of them is V or F (the beat model's call)

    def take(self, y: np.ndarray) -> None:
        known = len(self.beats.r_peaks)
        super().take(y)
        self.rhythm_beats += self.beats.r_peaks[known:]

    def ready(self) -> tuple[np.ndarray, np.ndarray | None]:
        starts, inputs = super().ready()
        if len(starts) and self.beat_runner is not None:
            self._classify_beats_before(int(starts.max()) + self.spec.window)
        return starts, inputs

    def _classify_beats_before(self, until: int) -> None:
        """The beat model's V and F calls for the beats before `until` not yet classified, as analyze makes them."""
        pending = [r for r in self.rhythm_beats[len(self.rhythm_ectopic):] if r < until]
        if not pending:
            return
        half = self.beat_runner.spec.window // 2
        first = self.beats.r_peaks.index(pending[0])
        tracks = self.tracks(pending[0] - half, pending[-1] + half)
        flags = ectopic_beats(self.beat_runner, tracks, self.beat_runner.spec, np.arange(first, first + len(pending)))
        self.rhythm_ectopic += flags.tolist()

    def problem(self, start: int) -> str | None:
        return preprocess.rhythm_problem(np.array(self.beats.r_peaks), start, self.spec.window)

    def inputs(self, starts: np.ndarray) -> np.ndarray:
        lo = starts.min()
        return preprocess.rhythm_windows(self.tracks(lo, starts.max() + self.spec.window), starts - lo,
                                         self.spec.window)

    def classified(self, start, window_start, output, trace) -> tuple[WindowEvent, Finding]:
        evidence, trace = None, self.at_sensor_rate(trace)
        if self.evidence is not None:
            end_s = (start + self.spec.window) / self.spec.fs
            beats = np.array(self.rhythm_beats) / self.spec.fs
            ectopic = None
            if self.beat_runner is not None:  # the beats after the window's end are not read: not classified yet
                ectopic = np.r_[self.rhythm_ectopic, np.zeros(len(beats) - len(self.rhythm_ectopic), bool)]
            evidence = float(self.evidence.of_windows(beats, np.array([end_s]), ectopic)[0])
            output = with_evidence(output[None], np.array([evidence], np.float32))[0]
        label, p = _label(self.spec, output)
        return (self._event(start, window_start, label=label, p=round(p, 4), trace=trace,
                            rhythm_evidence=None if evidence is None else round(evidence, 3)),
                self._finding(window_start, trace, label, p))

    def alerts(self, finding: Finding) -> list[Alert]:
        return self.monitor.policy.rhythm_window(finding)

    def forget(self, keep_from: int) -> None:
        """The beats before keep_from but the CONTEXT_SPAN + 1 the next window's RR evidence may still read."""
        super().forget(keep_from)
        before = sum(1 for r in self.rhythm_beats if r < keep_from) - (rr_features.CONTEXT_SPAN + 1)
        if before > 0:
            del self.rhythm_beats[:before], self.rhythm_ectopic[:before]

    def keep_from(self) -> int:
        return super().keep_from() - self.lookahead  # the beat windows of the beats still to classify


class _HeartRateTask(_WindowTask):
    """Heart-rate models (ppg_hr): spectra of PPG and accelerometer windows, scored over heart rates by the model's
    trace and tracked from window to window (models.heart_rate); an event's trace is where in the window the PPG
    beats at the rate read (rate_evidence)."""

    signal, channels = "ppg", 4
    bandpass = staticmethod(preprocess.ppg_bandpass)

    def __init__(self, monitor: Monitor):
        super().__init__(monitor)
        self.tracker = HeartRateTracker()

    def _windows(self, starts: np.ndarray) -> np.ndarray:
        window = self.spec.window
        return np.stack([self.monitor._filtered.slice(s, s + window) for s in starts]).transpose(0, 2, 1)

    def inputs(self, starts: np.ndarray) -> np.ndarray:
        """preprocess.ppg_windows on the already band-passed stream."""
        return preprocess.ppg_spectra(self._windows(starts))

    def classified(self, start, window_start, output, trace) -> tuple[WindowEvent, Finding]:
        hr = self.tracker.update(trace)
        ppg = self._windows(np.array([start]))[0, 0]
        trace = self.at_sensor_rate(rate_evidence(ppg, hr, self.spec.fs))
        return (self._event(start, window_start, hr_bpm=round(hr, 1), trace=trace),
                self._finding(window_start, trace, "hr", 1.0, hr))

    def gated(self, start, window_start, problem) -> tuple[WindowEvent, Finding]:
        self.tracker.skip()
        return super().gated(start, window_start, problem)

    def alerts(self, finding: Finding) -> list[Alert]:
        return self.monitor.policy.heart_rate_window(finding)


_TASKS: dict[str, type[_Task]] = {"beat": _BeatTask, "rhythm": _RhythmTask, "hr": _HeartRateTask}


def _label(spec, output: np.ndarray) -> tuple[str, float]:
    """A classifier's label and its probability."""
    p = torch.softmax(torch.from_numpy(output), dim=0).numpy()
    return spec.outputs[int(p.argmax())], float(p.max())
