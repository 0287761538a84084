"""Per-minute vitals on the device (sdk.device.vitals), in the status the listener keeps."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from conftest import sample_alert
from sdk.clinician.listener import Listener
from sdk.clinician.store import Store
from sdk.device.monitor import BeatEvent, WindowEvent
from sdk.device.vitals import VitalsTracker
from sdk.stream.mqtt import BrokerConfig

FS = 200.0
START = datetime(2026, 1, 1, 8, 0, tzinfo=timezone.utc)


def beat(sample: int, label: str | None) -> BeatEvent:
    return BeatEvent(sample, sample / FS, sample - 100, label, 0.9 if label else None, None)


def test_minutes_of_beats_give_rate_counts_and_nothing_twice():
    tracker = VitalsTracker(FS, START)
    rr = [0.75] * 80 + [0.5] * 110  # 80 bpm, then 120 bpm from t = 60 s to 115 s
    samples = np.round(np.cumsum(rr) * FS).astype(int)
    labels = ["N"] * len(samples)
    labels[10], labels[11], labels[100] = "V", "S", None
    entries = []
    for chunk in np.array_split(np.arange(len(samples)), 17):  # events arrive in bunches, as from a Monitor
        entries += tracker.take([beat(int(samples[i]), labels[i]) for i in chunk])
    assert [e["start"] for e in entries] == ["2026-01-01T08:00:00+00:00"]  # the second minute is not over yet
    entries += tracker.finish()
    assert [e["hr_bpm"] for e in entries] == [80.0, 120.0]
    assert entries[0]["beats"] == {"N": 77, "S": 1, "V": 1} and entries[1]["beats"]["unclassified"] == 1
    assert sum(sum(e["beats"].values()) for e in entries) == len(samples)
    assert entries[1]["start"] == "2026-01-01T08:01:00+00:00" and entries[0]["af_fraction"] is None
    assert tracker.finish() == []


def test_rhythm_and_heart_rate_windows():
    tracker = VitalsTracker(FS, START)
    windows = [WindowEvent(int(s * FS), int((s + 10) * FS), s, s + 10, label="AF" if s >= 30 else "non-AF")
               for s in range(0, 60, 5)]
    ppg = [WindowEvent(int(s * FS), int((s + 8) * FS), s, s + 8, hr_bpm=hr) for s, hr in [(60, 90.0), (62, 94.0)]]
    entries = tracker.take(windows) + tracker.take(ppg) + tracker.finish()
    assert entries[0]["af_fraction"] == 0.4 and entries[0]["hr_bpm"] is None  # windows count where they end
    assert entries[1]["hr_bpm"] == 92.0 and entries[1]["af_fraction"] == 1.0


def test_listener_keeps_valid_statuses_and_dead_letters_bad_ones(tmp_path):
    store = Store(tmp_path / "store.sqlite")
    listener = Listener(BrokerConfig("mqtt://127.0.0.1:1"), store)
    topic = "heartsight/v1/s1/dev-a/status"
    minute = {"start": "2026-01-01T08:00:00+00:00", "period_s": 60.0, "hr_bpm": 71.5, "beats": {"N": 70},
              "af_fraction": None}
    good = b'{"device": "dev-a", "site": "s1", "state": "online", "queued": 0, "vitals": [%s]}' % \
        str(minute).replace("'", '"').replace("None", "null").encode()
    assert listener._handle(topic, good) == "statuses"
    assert listener._handle(topic, good) == "statuses"  # redelivered: the minute is kept once
    bad = [(b'{"device": "dev-b", "site": "s1", "state": "online"}', "came on heartsight/v1/s1/dev-a/status"),
           (b'{"device": "dev-a", "site": "s1", "state": "asleep"}', "status is invalid at state"),
           (good.replace(b"71.5", b"1e400"), "overflows"),
           (good.replace(b"2026-01-01", b"2026-02-30"), "not a real date"),
           (b"[]", "not an object")]
    for raw, reason in bad:
        assert listener._handle(topic, raw) == "dead_letters", raw
    assert [reason in d["reason"] for d, (_, reason) in zip(store.dead_letters(), bad)] == [True] * len(bad)
    assert store.vitals("dev-a") == [minute] and store.device_state("dev-a")[0]["state"] == "online"
    store.add(sample_alert())  # statuses and alerts side by side
    assert listener._handle("heartsight/v1/s1/dev-a/alerts", b"{}") == "dead_letters"
    store.close()
