"""The alert policy: which classified beats and windows become alerts, with hysteresis so alerts do not chatter.

Definitions (sample indices and times are at the sensor rate; "confident" means the model's probability for
its label is at least MIN_BEAT_CONFIDENCE = 0.6; a beat that is not confident, or that the signal-quality gate
kept from being classified, is "unknown"):
- ventricular_ectopic_beat: an isolated ventricular ectopic beat: a confident V beat whose previous and next
  beats are both known and not V. Raised when the next beat is classified; at the V beat's R peak; at most
  one alert per ECTOPIC_ALERT_INTERVAL_S = 30 s (details count those not alerted: suppressed_since_last), so
  frequent ectopy does not bury the clinician (the burden alert reports the rate).
- ventricular_run: at least VENTRICULAR_RUN_BEATS = 3 consecutive confident V beats. One alert per run, at its
  first beat, raised when the run ends (a beat that is not a confident V, or the end of the signal) or, for a
  sustained run, once it has lasted SUSTAINED_RUN_S = 30 s. details: run_length (beats), duration_s,
  rate_bpm, sustained. Two consecutive V beats (a couplet) raise neither this nor the isolated-beat alert.
- supraventricular_ectopy: a confident S beat, at most one alert per ECTOPIC_ALERT_INTERVAL_S = 30 s; details
  count the S beats not alerted since the previous one (suppressed_since_last).
- high_ectopy_burden: confident S and V beats in the sliding last 60 s. Raised when the count reaches
  BURDEN_RAISE_PER_MIN = 10, at the beat that reaches it; re-armed only after the count falls to
  BURDEN_CLEAR_PER_MIN = 5 or fewer (hysteresis), so a burden hovering around 10 per minute alerts once.
- af_start / af_end: rhythm windows (ecg_af: 10 s). af_start when consecutive windows classified AF span at
  least AF_MIN_S = 30 s, at the first of them; af_end, once in AF, when consecutive non-AF windows span at
  least 30 s, at the first of those (details: episode_duration_s). A window the quality gate skipped breaks
  the streak either way; the AF state is kept.
- hr_out_of_range: PPG heart-rate windows outside HR_LOW_BPM = 40 to HR_HIGH_BPM = 150 bpm for
  HR_WINDOWS = 3 consecutive windows, at the first of them (label low_hr or high_hr); re-armed after 3
  consecutive windows inside 45-145 bpm (hysteresis). The heart-rate model has no probability: confidence 1.
- signal_quality: a signal-quality problem starts (label: nan, flat_line, clipping or noise; see
  sdk.device.quality), at most one alert per QUALITY_ALERT_INTERVAL_S = 60 s. confidence 1, trace all zero
  (no model looked at the signal).

Every alert carries the raw signal excerpt at the sensor rate (ECG in mV; PPG in sensor units; dropouts held
at the last finite value) and the saliency trace aligned to it, sample by sample: for a beat, excerpt_s
(default 3 s) each side of its R peak, within the model window; for a run, from excerpt_s before its first
beat to excerpt_s after its last, with the largest of the beats' traces at each sample; for a window, the
window itself; for a signal-quality problem, excerpt_s before it and its first half second.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from sdk.errors import HeartSightError

MIN_BEAT_CONFIDENCE = 0.6
VENTRICULAR_RUN_BEATS = 3
SUSTAINED_RUN_S = 30.0
ECTOPIC_ALERT_INTERVAL_S = 30.0  # isolated V and S alerts, each
BURDEN_WINDOW_S = 60.0
BURDEN_RAISE_PER_MIN = 10
BURDEN_CLEAR_PER_MIN = 5
AF_MIN_S = 30.0
HR_LOW_BPM, HR_HIGH_BPM = 40.0, 150.0
HR_CLEAR_MARGIN_BPM = 5.0
HR_WINDOWS = 3
QUALITY_ALERT_INTERVAL_S = 60.0


@dataclass(frozen=True)
class Excerpt:
    """What an alert shows: the raw signal from sensor sample `start` and the saliency trace aligned to it."""

    start: int
    signal: np.ndarray
    trace: np.ndarray

    def __post_init__(self):
        if np.shape(self.signal) != np.shape(self.trace):
            raise HeartSightError(f"the trace has shape {np.shape(self.trace)} but the signal {np.shape(self.signal)}: "
                                  "an excerpt's trace must be aligned sample by sample with its signal")


def alert_id(device: str, site: str, model_sha256: str, stream: str, sample_index: int, kind: str,
             head_version: int = 0) -> str:
    """A UUID (version 8, RFC 9562) from the sha256 of what makes an alert: which device and site, which model (and
    head, once updated), which stream and where in it, what type. Never random, so every copy of an alert (outbox,
    resends, a recording replayed after a crash, even from another outbox) has the same id and the clinician's store
    keeps one."""
    model = [model_sha256] + ([int(head_version)] if head_version else [])
    key = json.dumps([device, site, *model, stream, int(sample_index), kind])
    raw = bytearray(hashlib.sha256(key.encode()).digest()[:16])
    raw[6] = raw[6] & 0x0F | 0x80  # version 8
    raw[8] = raw[8] & 0x3F | 0x80  # the RFC 9562 variant
    return raw.hex()


@dataclass(frozen=True)
class Alert:
    """One explained alert of one device. sdk.stream.payload encodes it for the wire (schemas/alert.v1.json)."""

    device: str
    site: str
    stream: str  # which recording or session of the device sample_index counts in (Monitor's stream_id)
    type: str
    time: datetime  # aware: the moment of sample_index
    sample_index: int  # sensor sample of the event
    confidence: float  # in [0, 1]
    label: str
    model: dict  # the model's name, version, sha256, backend and head version (sdk.device.backends.Runner.identity)
    fs: float  # the sensor rate of the excerpt
    excerpt: Excerpt
    details: dict

    @property
    def id(self) -> str:
        return alert_id(self.device, self.site, self.model["sha256"], self.stream, self.sample_index, self.type,
                        self.model.get("head_version", 0))


@dataclass(frozen=True)
class Finding:
    """One beat or window as the runtime classified it."""

    sample: int  # sensor sample of the beat's R peak, or of the window's first sample
    end: int  # sensor sample just past the window (beats: past the beat model's window)
    label: str | None  # None: not classified (a signal-quality problem)
    confidence: float  # the label's probability; 1 for heart rate
    excerpt: Excerpt | None  # None when not classified
    hr_bpm: float | None = None
    embedding: np.ndarray | None = None  # ectopic beats: what the model's head read (Runner.embed)


@dataclass
class _Run:
    """Consecutive confident V beats: the first, how many, and the excerpt covering all of them."""

    first: Finding
    count: int
    last_sample: int
    confidence_sum: float
    excerpt: Excerpt
    reported: bool = False


@dataclass
class _Streak:
    """Consecutive classified windows with one label."""

    label: str
    first: Finding
    confidence_sum: float
    count: int
    end: int


class AlertPolicy:
    """Turns findings, in time order, into Alerts for one device."""

    def __init__(self, *, fs: float, device: str, site: str, stream: str, start_time: datetime, model: dict):
        self.fs, self.device, self.site, self.stream = fs, device, site, stream
        self.start_time, self.model = start_time, model
        self._previous: Finding | None = None  # the beat before the current run of V beats
        self._run: _Run | None = None  # the current run of confident V beats
        self._last_ectopic_alert: dict[str, int] = {}  # alert type -> sample of its last alert
        self._ectopic_suppressed: dict[str, int] = {}
        self._ectopic: deque[int] = deque()  # samples of confident S and V beats in the last minute
        self._burden_raised = False
        self._in_af = False
        self._af_episode_start = 0
        self._streak: _Streak | None = None  # the current run of consecutive windows with one label
        self._hr_out: list[Finding] = []
        self._hr_in = 0
        self._hr_raised = False
        self._last_quality_alert: int | None = None

    def beat(self, finding: Finding) -> list[Alert]:
        alerts = self._ventricular(finding) + self._burden(finding)
        if self._known(finding) == "S":
            alerts += self._rate_limited("supraventricular_ectopy", finding, "S")
        return alerts

    def _rate_limited(self, kind: str, finding: "Finding", label: str) -> list[Alert]:
        """At most one alert of this kind per ECTOPIC_ALERT_INTERVAL_S; the next one counts those suppressed."""
        last = self._last_ectopic_alert.get(kind)
        if last is not None and finding.sample - last < ECTOPIC_ALERT_INTERVAL_S * self.fs:
            self._ectopic_suppressed[kind] = self._ectopic_suppressed.get(kind, 0) + 1
            return []
        self._last_ectopic_alert[kind] = finding.sample
        suppressed, self._ectopic_suppressed[kind] = self._ectopic_suppressed.get(kind, 0), 0
        return [self._alert(kind, finding.sample, finding.confidence, label, finding.excerpt,
                            _with_embedding({"suppressed_since_last": suppressed}, finding))]

    def rhythm_window(self, finding: Finding) -> list[Alert]:
        if finding.label is None:
            self._streak = None
            return []
        streak = self._streak
        if streak is not None and streak.label == finding.label:
            streak.confidence_sum += finding.confidence
            streak.count += 1
            streak.end = finding.end
        else:
            streak = self._streak = _Streak(finding.label, finding, finding.confidence, 1, finding.end)
        first = streak.first
        if streak.end - first.sample < AF_MIN_S * self.fs or self._in_af == (streak.label == "AF"):
            return []
        self._in_af = streak.label == "AF"
        details = {"windows": streak.count, "duration_s": round((streak.end - first.sample) / self.fs, 1)}
        if self._in_af:
            self._af_episode_start = first.sample
            kind = "af_start"
        else:
            details["episode_duration_s"] = round((first.sample - self._af_episode_start) / self.fs, 1)
            kind = "af_end"
        return [self._alert(kind, first.sample, streak.confidence_sum / streak.count, streak.label, first.excerpt,
                            details)]

    def heart_rate_window(self, finding: Finding) -> list[Alert]:
        if finding.hr_bpm is None:
            self._hr_out, self._hr_in = [], 0
            return []
        if not HR_LOW_BPM <= finding.hr_bpm <= HR_HIGH_BPM:
            self._hr_out.append(finding)
            self._hr_in = 0
        else:
            self._hr_out = []
            inside = HR_LOW_BPM + HR_CLEAR_MARGIN_BPM <= finding.hr_bpm <= HR_HIGH_BPM - HR_CLEAR_MARGIN_BPM
            self._hr_in = self._hr_in + 1 if inside else 0
            if self._hr_in >= HR_WINDOWS:
                self._hr_raised = False
        if self._hr_raised or len(self._hr_out) < HR_WINDOWS:
            return []
        self._hr_raised = True
        first, rates = self._hr_out[0], [round(f.hr_bpm, 1) for f in self._hr_out]
        self._hr_out = []
        label = "low_hr" if np.median(rates) < HR_LOW_BPM else "high_hr"
        return [self._alert("hr_out_of_range", first.sample, 1.0, label, first.excerpt,
                            {"hr_bpm": rates, "low_bpm": HR_LOW_BPM, "high_bpm": HR_HIGH_BPM})]

    def quality(self, kind: str, start: int, excerpt: Excerpt) -> list[Alert]:
        last = self._last_quality_alert
        if last is not None and start - last < QUALITY_ALERT_INTERVAL_S * self.fs:
            return []
        self._last_quality_alert = start
        return [self._alert("signal_quality", start, 1.0, kind, excerpt, {"problem": kind, "start_sample": start})]

    def finish(self) -> list[Alert]:
        """End of the signal: a run still going is reported."""
        run, self._run = self._run, None
        if run is None or run.reported or run.count < VENTRICULAR_RUN_BEATS:
            return []
        return [self._run_alert(run, sustained=False)]

    def _known(self, finding: Finding) -> str | None:
        """The label if it counts (classified and confident), else None (unknown)."""
        return finding.label if finding.label is not None and finding.confidence >= MIN_BEAT_CONFIDENCE else None

    def _ventricular(self, finding: Finding) -> list[Alert]:
        label = self._known(finding)
        run = self._run
        if label == "V":
            if run is None:
                self._run = _Run(finding, 1, finding.sample, finding.confidence, finding.excerpt)
                return []
            if run.reported:  # a sustained run already alerted: nothing more to collect
                return []
            run.count += 1
            run.last_sample = finding.sample
            run.confidence_sum += finding.confidence
            run.excerpt = _union(run.excerpt, finding.excerpt)
            if run.count >= VENTRICULAR_RUN_BEATS and finding.sample - run.first.sample >= SUSTAINED_RUN_S * self.fs:
                return [self._run_alert(run, sustained=True)]
            return []
        alerts = []
        if run is not None and run.count == 1 and label is not None and self._previous is not None \
                and self._known(self._previous) not in (None, "V"):
            alerts += self._rate_limited("ventricular_ectopic_beat", run.first, "V")
        elif run is not None and run.count >= VENTRICULAR_RUN_BEATS and not run.reported:
            alerts.append(self._run_alert(run, sustained=False))
        self._run, self._previous = None, finding
        return alerts

    def _run_alert(self, run: _Run, sustained: bool) -> Alert:
        run.reported = True
        duration = (run.last_sample - run.first.sample) / self.fs
        details = {"run_length": run.count, "duration_s": round(duration, 2),
                   "rate_bpm": round(60.0 * (run.count - 1) / duration, 1) if duration > 0 else None,
                   "sustained": sustained}
        return self._alert("ventricular_run", run.first.sample, run.confidence_sum / run.count, "V", run.excerpt,
                           _with_embedding(details, run.first))

    def _burden(self, finding: Finding) -> list[Alert]:
        while self._ectopic and self._ectopic[0] <= finding.sample - BURDEN_WINDOW_S * self.fs:
            self._ectopic.popleft()
        if self._known(finding) in ("S", "V"):
            self._ectopic.append(finding.sample)
        count = len(self._ectopic)
        if self._burden_raised and count <= BURDEN_CLEAR_PER_MIN:
            self._burden_raised = False
        if self._burden_raised or count < BURDEN_RAISE_PER_MIN or self._known(finding) not in ("S", "V"):
            return []
        self._burden_raised = True
        return [self._alert("high_ectopy_burden", finding.sample, finding.confidence, finding.label, finding.excerpt,
                            _with_embedding({"ectopic_per_min": count, "raise_at": BURDEN_RAISE_PER_MIN,
                                             "clear_at": BURDEN_CLEAR_PER_MIN}, finding))]

    def _alert(self, kind: str, sample: int, confidence: float, label: str, excerpt: Excerpt,
               details: dict) -> Alert:
        return Alert(device=self.device, site=self.site, stream=self.stream, type=kind,
                     time=self.start_time + timedelta(seconds=sample / self.fs), sample_index=sample,
                     confidence=min(max(float(confidence), 0.0), 1.0), label=label, model=dict(self.model), fs=self.fs,
                     excerpt=excerpt, details=details)


def _with_embedding(details: dict, finding: Finding) -> dict:
    """A beat alert's details with its beat's embedding, which is what lets the clinic refit this patient's head from
    the clinician's verdict on the alert (sdk.clinician.recalibrate)."""
    if finding.embedding is None:
        return details
    return {**details, "embedding": [float(v) for v in finding.embedding]}


def _union(a: Excerpt, b: Excerpt) -> Excerpt:
    """One excerpt covering two overlapping ones of the same signal (beats of a run, 6 s windows); traces
    combined by their maximum."""
    start = min(a.start, b.start)
    end = max(a.start + len(a.signal), b.start + len(b.signal))
    signal, trace = np.zeros(end - start), np.zeros(end - start)
    for e in (a, b):
        at = slice(e.start - start, e.start - start + len(e.signal))
        signal[at] = e.signal
        trace[at] = np.maximum(trace[at], e.trace)
    return Excerpt(start, signal, trace)
