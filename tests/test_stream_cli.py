"""`heartsight stream` to a real broker, `heartsight clinician listen|export|review` on the other side.

The listener is a process of its own, stopped with SIGTERM as a service manager stops it, and a device that comes back
after an outage is a second `stream` process; the rest runs sdk.cli.main in this process."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing

import numpy as np
import paho.mqtt.client as mqtt

from conftest import DEADLINE_S, heartsight
from sdk.clinician.listener import Listener
from sdk.clinician.store import Store
from sdk.data.synthetic import synthetic_ecg
from sdk.demo.broker import free_port, wait_until
from sdk.stream.mqtt import BrokerConfig
from sdk.stream.outbox import Outbox


def listening(broker, db) -> bool:
    """Publish a payload the listener must dead-letter; once one is in its store, it hears what comes after."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    try:  # a client of our own, so that a slow broker makes this probe time out instead of hanging the suite
        client.connect("127.0.0.1", broker.port, keepalive=10)
        client.loop_start()
        client.publish("heartsight/v1/probe/probe/alerts", b"probe", qos=1).wait_for_publish(timeout=5)
    except (OSError, RuntimeError):
        return False
    finally:
        client.loop_stop()
        client.disconnect()
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as store:
            return store.execute("SELECT count(*) FROM dead_letters").fetchone()[0] > 0
    except sqlite3.OperationalError:  # the listener has not created its store yet
        return False


def test_a_replayed_recording_reaches_the_clinician_store_and_review_pages(broker, tmp_path, heartsight_main):
    ecg = synthetic_ecg(duration_s=90, fs=250, heart_rate=70, ectopic={"V": 0.08}, seed=5)
    recording = tmp_path / "patch.npy"
    np.save(recording, ecg.signal)
    db = tmp_path / "alerts.sqlite"
    env = {k: v for k, v in os.environ.items() if k != "HEARTSIGHT_DATA"}
    listener = subprocess.Popen([sys.executable, "-m", "sdk.cli", "clinician", "listen", "--broker", broker.url,
                                 "--db", str(db), "--duration", "120"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: listening(broker, db), DEADLINE_S)
        run = heartsight_main("stream", recording, "--fs", 250, "--broker", broker.url, "--device", "patch-1",
                              "--site", "ward-3", "--speed", "max", "--outbox", tmp_path / "outbox.sqlite", "--json")
        assert run.returncode == 0, run.stderr
        summary = json.loads(run.stdout)
        assert summary["samples"] == len(ecg.signal) and abs(summary["beats"] - len(ecg.r_peaks)) <= 8
        assert summary["awaiting_broker"] == summary["awaiting_clinic"] == 0  # the listener acknowledged each
        assert summary["alerts"] == len(summary["alert_ids"]) > 0

        def stored():
            out = heartsight_main("clinician", "export", "--db", db)
            return [json.loads(line) for line in out.stdout.splitlines()] if out.returncode == 0 else []
        assert wait_until(lambda: len(stored()) == len(summary["alert_ids"]), DEADLINE_S)
    finally:
        listener.send_signal(signal.SIGTERM)  # as a service manager stops it: a normal end (SIGINT may be ignored)
        assert listener.wait(DEADLINE_S) == 0
    counts = json.loads(listener.stdout.read())  # a stopped service still says what it did
    alerts = stored()
    assert counts["stored"] == len(alerts) and counts["dead_letters"] >= 1  # the probes
    assert sorted(a["id"] for a in alerts) == sorted(summary["alert_ids"])
    assert {a["device"] for a in alerts} == {"patch-1"}
    assert "ventricular_ectopic_beat" in {a["type"] for a in alerts}
    assert all(len(a["signal"]) == len(a["trace"]) > 0 for a in alerts)
    review = heartsight_main("clinician", "review", "--db", db, "--out", tmp_path / "review")
    assert review.returncode == 0, review.stderr
    page = next((tmp_path / "review").glob("*patch-1*.html")).read_text()
    assert page.count("<img") >= len(alerts)


def test_a_bad_speed_is_explained(tmp_path, heartsight_main):
    run = heartsight_main("stream", tmp_path / "x.npy", "--fs", 250, "--broker", "mqtt://127.0.0.1:1",
                          "--device", "d", "--speed", "fast")
    assert run.returncode == 2 and "--speed must be a positive number" in run.stderr


def test_an_unreachable_broker_leaves_alerts_queued_says_why_and_the_next_run_delivers_them(broker, tmp_path):
    ecg = synthetic_ecg(duration_s=40, fs=250, heart_rate=70, ectopic={"V": 0.15}, seed=2)
    recording, outbox = tmp_path / "patch.npy", tmp_path / "outbox.sqlite"
    np.save(recording, ecg.signal)
    args = (recording, "--fs", 250, "--device", "patch-2", "--outbox", outbox, "--json")
    offline = heartsight("stream", *args, "--broker", f"mqtt://127.0.0.1:{free_port()}", "--wait", 1.5)
    assert offline.returncode == 0, offline.stderr
    summary = json.loads(offline.stdout)
    assert summary["awaiting_broker"] == len(summary["alert_ids"]) > 0 and summary["awaiting_clinic"] == 0
    assert "not connected" in offline.stderr and "retrying in" in offline.stderr and str(outbox) in offline.stderr
    assert [a["id"] for a in Outbox(outbox).pending()] == summary["alert_ids"]

    with Store(tmp_path / "alerts.sqlite") as store:
        listener = Listener(BrokerConfig(broker.url), store)
        listener.start(DEADLINE_S)
        online = heartsight("stream", *args, "--broker", broker.url)
        assert online.returncode == 0, online.stderr
        again = json.loads(online.stdout)
        assert again["awaiting_broker"] == again["awaiting_clinic"] == 0 and Outbox(outbox).pending() == []
        assert again["alert_ids"] == summary["alert_ids"]  # the same recording: the same alerts, stored once
        counts = listener.stop()
        assert counts.pop("statuses") >= 1
        assert counts == {"stored": len(summary["alert_ids"]), "duplicates": 0, "dead_letters": 0}
