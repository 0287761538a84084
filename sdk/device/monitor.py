"""The device runtime: analyses a signal as it arrives, gates it on signal quality and raises explained alerts.

`Monitor(...).feed(chunk)` returns the events that chunk completed; `finish()` ends the signal. The path is
sdk.device.analyze's, streamed: resample to the model rate -> (ECG) the streaming R-peak detector ->
sdk.data.preprocess -> the model on a backend -> its explanation trace. Every stage keeps its state between
chunks and decides only when the signal it needs has arrived, so the result does not depend on how the
signal is cut into chunks, and it equals analyze() on the whole recording (the beat context uses past beats
only; the one difference: a rhythm window before the first R peak is scaled by 1, not by that later beat).

Events, in time order per kind (sample indices are at the sensor rate):
- {"kind": "beat", "sample", "time_s", "label", "p", "window_start", "trace"}: one R peak and its class.
  `trace` (float32 numpy array at the sensor rate, starting at sensor sample `window_start`) is the saliency
  of the predicted class over the model window. A beat whose window overlaps a signal-quality problem is
  not classified: label, p and trace are None and "quality" names the problem.
- {"kind": "window", "start_sample", "end_sample", "start_s", "end_s", "label", "p" (rhythm models) or
  "hr_bpm" (heart-rate models), "window_start", "trace"}: the same for window models ("quality" likewise).
- {"kind": "quality", "problem", "start_sample", "end_sample"}: a signal-quality problem (sdk.device.quality);
  once when it is found (end_sample None) and once when it is over.
- {"kind": "alert", "alert": dict}: an alert.v1 dict (sdk.device.alerts), ready for Publisher.publish.

Latency: a beat is classified once the signal 3 s past it is settled (the model window, the R-peak
detector's confirmation, the resampler's look-ahead of ~80 ms): 3.6-4.1 s after its R wave on synthetic ECG
at 50-120 bpm, more after long pauses; a window once its end is settled. Memory is bounded by the model
window plus that latency (and a few seconds of raw signal for alert excerpts).
"""

from __future__ import annotations

import math
import numbers
from datetime import datetime, timezone

import numpy as np
import torch
from scipy.signal import firwin, resample_poly

from sdk.data import preprocess
from sdk.data.records import check_fs, resample_factors, resampled_index
from sdk.data.rpeak import RPeakDetector
from sdk.device.alerts import AlertPolicy, Excerpt, Finding
from sdk.device.analyze import trace_at_input_rate
from sdk.device.backends import ModelRef, Runner, make_runner
from sdk.device.names import check_name
from sdk.device.quality import QualityGate
from sdk.errors import HeartSightError

REACH = int(4 * preprocess.BUMP_SIGMA)  # a beat's rhythm-track bump reaches this far: a window needs the beats
# this far past its end
RAW_MARGIN_S = 5.0  # raw signal kept beyond excerpt_s for signal-quality alerts, which come up to ~3 s late


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
        taps = firwin(2 * self._half + 1, 1.0 / max(self.up, self.down), window=("kaiser", 5.0))  # resample_poly's
        self._filter = taps.astype(np.float32)  # in the signal's dtype, as resample_poly casts it
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
    the int8 backends run the model's export as it is (sdk.device.backends). device, site: names for the alerts. start_time: aware datetime of the first
    sample (default now, UTC). excerpt_s: signal shown each side of a beat in beat alerts (at most half the
    model window, which the trace covers) and before a signal-quality problem in its alert.
    Chunks: ECG models take 1-D arrays (samples,) in mV; ppg_hr takes (samples, 4) PPG and accelerometer
    x, y, z, or PPG alone (accelerometer taken as zero: a still wrist).
    """

    def __init__(self, model: ModelRef | Runner = "ecg_beat", fs: float = 360.0, backend: str | None = None,
                 device: str = "device", site: str = "default", start_time: datetime | None = None,
                 excerpt_s: float = 3.0):
        check_fs(fs)
        check_name("device", device)
        check_name("site", site)
        start_time = start_time or datetime.now(timezone.utc)
        if start_time.tzinfo is None:
            raise HeartSightError("start_time has no time zone: pass an aware datetime, e.g. datetime.now(timezone.utc)")
        self.runner = model if isinstance(model, Runner) else make_runner(model, backend)
        self.spec = spec = self.runner.spec
        preprocess.check_input_rate(fs, spec.task)
        if not isinstance(excerpt_s, numbers.Real) or not 0 < excerpt_s <= spec.window / spec.fs / 2:
            raise HeartSightError(f"excerpt_s must be in (0, {spec.window / spec.fs / 2:g}] s (half the model window), "
                                  f"got {excerpt_s!r}")
        self.fs, self.backend = float(fs), self.runner.backend
        self._excerpt = int(round(excerpt_s * fs))
        self._channels = 4 if spec.task == "hr" else 1
        self._gate = QualityGate(fs, "ppg" if spec.task == "hr" else "ecg")
        self._resampler = StreamResampler(fs, spec.fs, self._channels)
        self._filter = preprocess.ppg_bandpass(spec.fs) if spec.task == "hr" else preprocess.ecg_bandpass(spec.fs)
        self._detector = RPeakDetector(spec.fs) if spec.task != "hr" else None
        self._raw = _Samples(self._channels)  # at the sensor rate, non-finite samples held at the last finite one
        self._filtered = _Samples(self._channels)  # band-passed, at the model rate
        self._last_finite = np.zeros(self._channels, np.float32)
        self._n_in = 0
        self._finished = False
        self._beats = preprocess.BeatContextBuilder()  # beats at the model rate, oldest kept first
        self._beats_dropped = 0
        self._next_beat = 0  # index (counted from the first beat) of the next beat to classify
        self._next_window = 0  # model-rate start of the next window to classify
        self.model_info = dict(self.runner.identity)
        self.policy = AlertPolicy(fs=self.fs, device=device, site=site, start_time=start_time, model=self.model_info)

    def feed(self, chunk: np.ndarray) -> list[dict]:
        """Analyse the next samples; returns the events they complete."""
        if self._finished:
            raise HeartSightError("this Monitor has finished its signal; create a new one")
        x = self._checked(chunk)
        if not len(x):
            return []
        clean = self._hold_last_finite(x)
        self._raw.append(clean)
        self._n_in += len(x)
        events = self._quality(self._gate.process(x[:, 0]))
        return events + self._analyse(self._resampler.process(clean))

    def finish(self) -> list[dict]:
        """End of the signal: the remaining beats and windows (zero-padded as analyze pads), and open problems."""
        if self._finished:
            return []
        self._finished = True
        events = self._quality(self._gate.flush())
        events += self._analyse(self._resampler.flush())
        return events + [{"kind": "alert", "alert": a} for a in self.policy.finish()]

    def _checked(self, chunk: np.ndarray) -> np.ndarray:
        x = np.asarray(chunk)
        if x.dtype.kind not in "iuf":
            raise HeartSightError(f"a chunk must hold numbers, got dtype {x.dtype}")
        if x.ndim == 2 and x.shape[1] == 1:
            x = x[:, 0]
        if self._channels == 1:
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

    def _quality(self, problems) -> list[dict]:
        events = []
        for problem in problems:
            events.append({"kind": "quality", "problem": problem.kind, "start_sample": problem.start,
                           "end_sample": problem.end})
            if problem.end is None:
                # up to half a second of the problem: the gate reports it with at least that much signal past
                # its start, so the excerpt does not depend on chunking
                lo = max(problem.start - self._excerpt, 0)
                hi = min(problem.start + min(self._excerpt, self._gate.block), self._n_in)
                signal = self._raw.slice(lo, hi)[:, 0]
                excerpt = Excerpt(lo, signal, np.zeros(len(signal)))
                alerts = self.policy.quality(problem.kind, problem.start, excerpt)
                events += [{"kind": "alert", "alert": a} for a in alerts]
        return events

    def _analyse(self, y: np.ndarray) -> list[dict]:
        """Model-rate samples in: filter, detect R peaks, classify whatever is ready, forget what is done."""
        if len(y):
            self._filtered.append(self._filter(y))
        if self._detector is not None:
            peaks = self._detector.process(y[:, 0]) if len(y) else np.zeros(0, np.int64)
            if self._finished:
                peaks = np.concatenate([peaks, self._detector.flush()])
            for r in peaks:
                self._add_beat(int(r))
        events = self._classify_beats() if self.spec.task == "beat" else self._classify_windows()
        self._forget()
        return events

    def _add_beat(self, r: int) -> None:
        reach = int(round(preprocess.R_SEARCH_S * self.spec.fs))
        near = self._filtered.slice(r - reach, r + reach + 1)[:, 0]
        self._beats.add(r, preprocess.r_amplitudes(near, np.array([reach]), self.spec.fs)[0])

    def _settled(self) -> float:
        """Model-rate sample before which every R peak is known."""
        return math.inf if self._finished else self._detector.settled_until

    def _ready(self, end: int) -> bool:
        """Whether a window ending at this model-rate sample has everything it needs: the filtered signal,
        its beats and the bumps of the beats just past it, and the quality of its raw samples."""
        if self._finished:
            return True
        return (self._filtered.end >= end and self._gate.known_until >= self._to_sensor(end, math.ceil)
                and (self._detector is None or self._settled() >= end + REACH))

    def _classify_beats(self) -> list[dict]:
        half, window = self.spec.window // 2, self.spec.window
        ready = []
        while self._next_beat - self._beats_dropped < len(self._beats.r_peaks):
            r = self._beats.r_peaks[self._next_beat - self._beats_dropped]
            if not self._ready(r - half + window):
                break
            ready.append(self._next_beat - self._beats_dropped)
            self._next_beat += 1
        if not ready:
            return []
        starts = np.array([self._beats.r_peaks[i] - half for i in ready])
        inputs = preprocess.beat_windows(self._tracks(starts.min(), starts.max() + window), np.array(ready), window)
        return self._classify(starts, inputs, self.policy.beat)

    def _classify_windows(self) -> list[dict]:
        window, hop = self.spec.window, self.spec.hop
        starts = []
        while self._next_window + window <= self._filtered.end and self._ready(self._next_window + window):
            starts.append(self._next_window)
            self._next_window += hop
        if not starts:
            return []
        starts = np.array(starts)
        if self.spec.task == "hr":
            return self._classify(starts, self._ppg_inputs(starts), self.policy.heart_rate_window)
        lo = starts.min()
        inputs = preprocess.rhythm_windows(self._tracks(lo, starts.max() + window), starts - lo, window)
        return self._classify(starts, inputs, self.policy.rhythm_window)

    def _tracks(self, lo: int, hi: int) -> preprocess.EcgTracks:
        """preprocess.EcgTracks of model-rate samples [lo, hi), beat positions counted from lo, with the
        kept beats' context; the tracks are zero outside the signal, as offline."""
        kept = self._beats.context()
        context = preprocess.BeatContext(kept.r_peaks - lo, kept.rr_relative, kept.rr_change, kept.amplitude_scale)
        absolute = np.arange(lo, hi)
        outside = (absolute < 0) | (absolute >= (self._filtered.end if self._finished else hi))
        rhythm = preprocess.bump_track(hi - lo, context.r_peaks, context.rr_relative)
        change = preprocess.bump_track(hi - lo, context.r_peaks, context.rr_change)
        rhythm[outside], change[outside] = 0, 0
        return preprocess.EcgTracks(self._filtered.slice(lo, hi)[:, 0], rhythm, change, context)

    def _ppg_inputs(self, starts: np.ndarray) -> np.ndarray:
        """preprocess.ppg_windows on the already band-passed stream."""
        window = self.spec.window
        windows = np.stack([self._filtered.slice(s, s + window) for s in starts]).transpose(0, 2, 1)
        return preprocess.standardized_ppg(np.ascontiguousarray(windows))  # contiguous rows, as offline

    def _classify(self, starts: np.ndarray, inputs: np.ndarray, to_policy) -> list[dict]:
        """Gate, run and explain the windows starting at these model-rate samples; events and alerts in order."""
        spec = self.spec
        problems = [self._gate.problem(self._to_sensor(s, math.floor), self._to_sensor(s + spec.window, math.ceil))
                    for s in starts]
        good = np.array([p is None for p in problems])
        outputs, traces = self._run(inputs[good]) if good.any() else (None, None)
        length = int(round(spec.window * self.fs / spec.fs))
        events, k = [], 0
        for start, problem in zip(starts, problems):
            window_start = int(round(start * self.fs / spec.fs))
            event = self._describe(start, window_start)
            sample = event["sample"] if spec.task == "beat" else event["start_sample"]
            if problem is not None:
                event.update({"label": None, "p" if spec.is_classifier else "hr_bpm": None, "trace": None,
                              "quality": problem})
                finding = Finding(sample, window_start + length, None, 0.0, None)
            else:
                trace = trace_at_input_rate(traces[k], spec, self.fs).astype(np.float32)
                excerpt = self._excerpt_of(sample if spec.task == "beat" else None, window_start, trace)
                if spec.is_classifier:
                    p = torch.softmax(torch.from_numpy(outputs[k]), dim=0).numpy()
                    label = spec.outputs[int(p.argmax())]
                    event.update({"label": label, "p": round(float(p.max()), 4), "trace": trace})
                    finding = Finding(sample, window_start + length, label, float(p.max()), excerpt)
                else:
                    hr = float(outputs[k][0])
                    event.update({"hr_bpm": round(hr, 1), "trace": trace})
                    finding = Finding(sample, window_start + length, "hr", 1.0, excerpt, hr)
                k += 1
            events.append(event)
            events += [{"kind": "alert", "alert": a} for a in to_policy(finding)]
        return events

    def _describe(self, start: int, window_start: int) -> dict:
        spec = self.spec
        end = start + spec.window
        if spec.task == "beat":
            sample = int(np.clip(resampled_index(start + spec.window // 2, spec.fs, self.fs), 0, self._n_in - 1))
            return {"kind": "beat", "sample": sample, "time_s": round(sample / self.fs, 3),
                    "window_start": window_start}
        return {"kind": "window", "start_sample": window_start, "end_sample": int(round(end * self.fs / spec.fs)),
                "start_s": round(start / spec.fs, 3), "end_s": round(end / spec.fs, 3), "window_start": window_start}

    def _excerpt_of(self, beat: int | None, window_start: int, trace: np.ndarray) -> Excerpt:
        """The raw signal under the model window (around a beat: excerpt_s each side), cut to the signal, and
        its trace."""
        lo, hi = window_start, window_start + len(trace)
        if beat is not None:
            lo, hi = max(lo, beat - self._excerpt), min(hi, beat + self._excerpt + 1)
        lo, hi = max(lo, 0), min(hi, self._n_in)
        signal = self._raw.slice(lo, hi)[:, 0].astype(np.float64)
        return Excerpt(lo, signal, trace[lo - window_start: hi - window_start])

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Outputs and traces. Unless the backend is batch-invariant, a lone window runs beside a zero one, so
        results never depend on how many windows a chunk completed."""
        if len(x) == 1 and not self.runner.batch_invariant:
            outputs, traces = self.runner.explain(np.concatenate([x, np.zeros_like(x)]))
            return outputs[:1], traces[:1]
        return self.runner.explain(x)

    def _to_sensor(self, model_sample: int, rounding) -> int:
        return max(0, int(rounding(model_sample * self.fs / self.spec.fs)))

    def _forget(self) -> None:
        """Drop what no pending or future beat, window or alert needs."""
        if self.spec.task == "beat":
            pending = self._beats.r_peaks[self._next_beat - self._beats_dropped:]
            first_needed = min(pending[0] if pending else math.inf, self._settled())
            if math.isinf(first_needed):
                return
            keep_from = int(first_needed) - self.spec.window // 2 - REACH
        else:
            keep_from = self._next_window - REACH
        self._filtered.drop_before(keep_from)
        # beats whose bumps cannot reach the kept signal, but the last one before it (a rhythm window's scale)
        old = sum(1 for r in self._beats.r_peaks if r < keep_from - REACH) - 1
        if old > 0:
            self._beats.forget(old)
            self._beats_dropped += old
        sensor_keep = min(self._to_sensor(keep_from, math.floor),
                          self._n_in - self._excerpt - int(RAW_MARGIN_S * self.fs))
        self._raw.drop_before(sensor_keep)
        self._gate.forget(sensor_keep)
