"""`heartsight stream`: replay a recording through the device runtime and publish its explained alerts."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import numpy as np

from sdk.data.records import Recording
from sdk.device.analyze import select_channels
from sdk.device.backends import ModelRef, Runner
from sdk.device.monitor import AlertEvent, BeatEvent, Event, Monitor
from sdk.errors import HeartSightError
from sdk.stream.payload import encode_alert
from sdk.stream.publisher import Publisher

CHUNK_S = 1.0  # the device hands the runtime one second of signal at a time
FLUSH_TIMEOUT_S = 30.0


def parse_speed(text: str) -> float | None:
    """'max' -> None (no waiting); a number X -> X times real time."""
    if text == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        raise HeartSightError(f"--speed must be a positive number (times real time) or 'max', got {text!r}") from None
    if not speed > 0:
        raise HeartSightError(f"--speed must be a positive number (times real time) or 'max', got {text!r}")
    return speed


def stream_recording(recording: Recording, publisher: Publisher, model: ModelRef | Runner = "ecg_beat",
                     speed: float | None = None, channel: int | None = None, start_time: datetime | None = None,
                     flush_timeout_s: float = FLUSH_TIMEOUT_S, backend: str | None = None) -> dict:
    """Feed the recording in 1-s chunks (paced by `speed`, or as fast as possible), publish every alert, and
    wait up to flush_timeout_s for the broker to acknowledge them; the rest stay queued on disk. Returns the
    summary, with the publisher's status line (why alerts are still queued, when it retries)."""
    monitor = Monitor(model=model, fs=recording.fs, backend=backend, device=publisher.device, site=publisher.site,
                      start_time=start_time or datetime.now(timezone.utc))
    signal = select_channels(recording, monitor.spec.task, channel)
    chunk = max(1, int(round(CHUNK_S * recording.fs)))
    beats, alert_ids = 0, []
    started = time.monotonic()
    for first in range(0, len(signal), chunk):
        if speed is not None:  # pace the replay: chunk k is due at k * chunk / fs / speed
            delay = first / recording.fs / speed - (time.monotonic() - started)
            if delay > 0:
                time.sleep(delay)
        events = monitor.feed(np.ascontiguousarray(signal[first: first + chunk]))
        beats, alert_ids = _publish(events, publisher, beats, alert_ids)
    beats, alert_ids = _publish(monitor.finish(), publisher, beats, alert_ids)
    queued = publisher.flush(flush_timeout_s)
    return {"samples": int(len(signal)), "beats": beats, "alerts_published": len(alert_ids) - queued,
            "queued": queued, "alert_ids": alert_ids, "status": publisher.status()}


def _publish(events: list[Event], publisher: Publisher, beats: int, alert_ids: list[str]) -> tuple[int, list[str]]:
    for event in events:
        if isinstance(event, BeatEvent):
            beats += 1
        elif isinstance(event, AlertEvent):
            publisher.publish(encode_alert(event.alert))
            alert_ids.append(event.alert.id)
    return beats, alert_ids
