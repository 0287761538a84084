"""`heartsight stream`: replay a recording through the device runtime and publish its explained alerts."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import datetime, timezone

import numpy as np

from sdk.data.records import Recording
from sdk.device.analyze import select_channels
from sdk.device.backends import ModelRef, Runner, make_runner
from sdk.device.monitor import AlertEvent, BeatEvent, Event, Monitor
from sdk.device.vitals import VitalsTracker
from sdk.errors import HeartSightError
from sdk.stream.payload import encode_alert
from sdk.stream.publisher import Publisher

log = logging.getLogger("heartsight.stream")

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


def recording_stream_id(signal: np.ndarray, fs: float, channel: int | None) -> str:
    """The stream identity of a replayed recording: a digest of the samples read, their rate and the channel asked
    for. Replaying the same file (after a crash, with the same outbox or another) gives the same alert ids, which the
    clinician's store keeps once; another file gives others."""
    digest = hashlib.sha256(json.dumps({"fs": fs, "channel": channel, "dtype": signal.dtype.str,
                                        "shape": signal.shape}).encode())
    digest.update(np.ascontiguousarray(signal).tobytes())
    return f"recording-{digest.hexdigest()[:32]}"


def stream_recording(recording: Recording, publisher: Publisher, model: ModelRef | Runner = "ecg_beat",
                     speed: float | None = None, channel: int | None = None, start_time: datetime | None = None,
                     flush_timeout_s: float = FLUSH_TIMEOUT_S, backend: str | None = None,
                     head_key: bytes | None = None) -> dict:
    """Feed the recording in 1-s chunks (paced by `speed`, or as fast as possible), publish every alert, and
    wait up to flush_timeout_s for the clinic to acknowledge them; the rest stay queued on disk. Returns the
    summary, with what still awaits the broker's or the clinic's acknowledgement and the publisher's status line
    (why, when it retries). The stream id is recording_stream_id, so the alert ids are the same at every replay
    (with the same head).

    Head updates the clinic sends this device are applied between chunks, when head_key (the device's signing key)
    is given, and reported back in the device's status (applied, or refused and why); the head in use stays on
    refusal."""
    runner = model if isinstance(model, Runner) else make_runner(model, backend)
    signal = select_channels(recording, runner.spec.task, channel)
    monitor = Monitor(model=runner, fs=recording.fs, device=publisher.device, site=publisher.site,
                      start_time=start_time or datetime.now(timezone.utc),
                      stream_id=recording_stream_id(signal, recording.fs, channel))
    vitals = VitalsTracker(recording.fs, monitor.policy.start_time)
    chunk = max(1, int(round(CHUNK_S * recording.fs)))
    beats, alert_ids = 0, []
    started = time.monotonic()
    for first in range(0, len(signal), chunk):
        if speed is not None:  # pace the replay: chunk k is due at k * chunk / fs / speed
            delay = first / recording.fs / speed - (time.monotonic() - started)
            if delay > 0:
                time.sleep(delay)
        _apply_head_update(publisher, monitor, head_key)
        events = monitor.feed(np.ascontiguousarray(signal[first: first + chunk]))
        beats, alert_ids = _publish(events, publisher, beats, alert_ids)
        publisher.report_vitals(vitals.take(events))
    events = monitor.finish()
    beats, alert_ids = _publish(events, publisher, beats, alert_ids)
    publisher.report_vitals(vitals.take(events) + vitals.finish())
    left = publisher.flush(flush_timeout_s)
    return {"samples": int(len(signal)), "beats": beats, "alerts": len(alert_ids), "alert_ids": alert_ids,
            "awaiting_broker": left.awaiting_broker, "awaiting_clinic": left.awaiting_clinic,
            "status": publisher.status()}


def _apply_head_update(publisher: Publisher, monitor: Monitor, head_key: bytes | None) -> None:
    blob = publisher.take_head_update()
    if blob is None:
        return
    if head_key is None:
        report = {"status": "refused", "reason": "this device was started without its head key (--head-key)"}
    else:
        try:
            report = {"status": "applied", "version": monitor.set_head(blob, head_key).version}
        except HeartSightError as error:
            report = {"status": "refused", "reason": str(error)}
    (log.info if report["status"] == "applied" else log.warning)("head update %s", report)
    publisher.report_head({**report, "head_version": monitor.model_info["head_version"]})


def _publish(events: list[Event], publisher: Publisher, beats: int, alert_ids: list[str]) -> tuple[int, list[str]]:
    for event in events:
        if isinstance(event, BeatEvent):
            beats += 1
        elif isinstance(event, AlertEvent):
            publisher.publish(encode_alert(event.alert))
            alert_ids.append(event.alert.id)
    return beats, alert_ids
