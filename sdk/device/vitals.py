"""Per-minute vitals from the device's events: heart rate, beats of each class and AF time, for the clinic's timeline.

Alerts say what went wrong; vitals say what the rest of the day looked like (the heart-rate trend, the ectopy
burden per hour, how much of the time was AF), at one small message a minute. A minute is reported once the
events past its end have arrived (events come in time order per kind) and again never.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from sdk.device.monitor import BeatEvent, Event, WindowEvent

PERIOD_S = 60.0


@dataclass
class _Minute:
    index: int
    beats: dict[str, int] = field(default_factory=dict)
    r_peaks: list[int] = field(default_factory=list)
    window_rates: list[float] = field(default_factory=list)
    windows: int = 0
    af_windows: int = 0


class VitalsTracker:
    """Feed it every event of a Monitor, in order; it returns the vitals of each minute that is complete.

    An entry: {"start": ISO time, "period_s": 60, "hr_bpm": median heart rate or None, "beats": {"N": ..,
    "unclassified": ..}, "af_fraction": share of classified rhythm windows called AF, or None}.
    """

    def __init__(self, fs: float, start_time: datetime, period_s: float = PERIOD_S):
        self.fs, self.start_time, self.period = float(fs), start_time, float(period_s)
        self._minute: _Minute | None = None
        self._last_r_peak: int | None = None  # the R peak before the current minute's first, for its first RR

    def take(self, events: list[Event]) -> list[dict]:
        done = []
        for event in events:
            if isinstance(event, BeatEvent):
                done += self._at(event.sample)
                self._add_beat(event)
            elif isinstance(event, WindowEvent):
                done += self._at(event.end_sample)
                self._add_window(event)
        return done

    def finish(self) -> list[dict]:
        """The last, partial minute (if anything happened in it)."""
        minute, self._minute = self._minute, None
        return [self._entry(minute)] if minute is not None else []

    def _at(self, sample: int) -> list[dict]:
        """Move to the minute holding this sample; the minutes it completes."""
        index = int(sample // (self.period * self.fs))
        if self._minute is None:
            self._minute = _Minute(index)
            return []
        if index <= self._minute.index:
            return []
        done = [self._entry(self._minute)]
        if self._minute.r_peaks:
            self._last_r_peak = self._minute.r_peaks[-1]
        self._minute = _Minute(index)
        return done

    def _add_beat(self, beat: BeatEvent) -> None:
        label = beat.label if beat.label is not None else "unclassified"
        self._minute.beats[label] = self._minute.beats.get(label, 0) + 1
        self._minute.r_peaks.append(beat.sample)

    def _add_window(self, window: WindowEvent) -> None:
        if window.hr_bpm is not None:
            self._minute.window_rates.append(float(window.hr_bpm))
        if window.label is not None:
            self._minute.windows += 1
            self._minute.af_windows += window.label == "AF"

    def _entry(self, minute: _Minute) -> dict:
        peaks = ([self._last_r_peak] if self._last_r_peak is not None else []) + minute.r_peaks
        rr = np.diff(peaks) / self.fs
        rr = rr[(rr > 0.2) & (rr < 3.0)]  # a missed or doubled R peak says nothing about the rate
        if len(rr):
            hr = 60.0 / float(np.median(rr))
        elif minute.window_rates:
            hr = float(np.median(minute.window_rates))
        else:
            hr = None
        start = self.start_time + timedelta(seconds=minute.index * self.period)
        return {"start": start.isoformat(), "period_s": self.period, "hr_bpm": None if hr is None else round(hr, 1),
                "beats": dict(sorted(minute.beats.items())),
                "af_fraction": round(minute.af_windows / minute.windows, 3) if minute.windows else None}
