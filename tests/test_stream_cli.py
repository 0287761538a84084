"""`heartsight stream` to a real broker, `heartsight clinician listen|export|review` on the other side."""

import json
import os
import signal
import subprocess
import sys

import numpy as np

from sdk.data.synthetic import synthetic_ecg
from test_cli import heartsight
from sdk.stream.broker import wait_until


def test_a_replayed_recording_reaches_the_clinician_store_and_review_pages(broker, tmp_path):  # broker: a Mosquitto of the test's own (conftest)
    ecg = synthetic_ecg(duration_s=90, fs=250, heart_rate=70, ectopic={"V": 0.08}, seed=5)
    recording = tmp_path / "patch.npy"
    np.save(recording, ecg.signal)
    db = tmp_path / "alerts.sqlite"
    env = {k: v for k, v in os.environ.items() if k != "HEARTSIGHT_DATA"}
    listener = subprocess.Popen([sys.executable, "-m", "sdk.cli", "clinician", "listen", "--broker", broker.url,
                                 "--db", str(db), "--duration", "120"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert wait_until(db.exists, 20)
        run = heartsight("stream", recording, "--fs", 250, "--broker", broker.url, "--device", "patch-1",
                         "--site", "ward-3", "--speed", "max", "--outbox", tmp_path / "outbox.sqlite", "--json")
        assert run.returncode == 0, run.stderr
        summary = json.loads(run.stdout)
        assert summary["samples"] == len(ecg.signal) and abs(summary["beats"] - len(ecg.r_peaks)) <= 8
        assert summary["queued"] == 0 and summary["alerts_published"] == len(summary["alert_ids"]) > 0

        def stored():
            out = heartsight("clinician", "export", "--db", db)
            return [json.loads(line) for line in out.stdout.splitlines()] if out.returncode == 0 else []
        assert wait_until(lambda: len(stored()) == len(summary["alert_ids"]), 30)
    finally:
        listener.send_signal(signal.SIGTERM)  # as a service manager stops it (SIGINT may be ignored under CI)
        assert listener.wait(20) == 130
    alerts = stored()
    assert sorted(a["id"] for a in alerts) == sorted(summary["alert_ids"])
    assert {a["device"] for a in alerts} == {"patch-1"}
    assert "ventricular_ectopic_beat" in {a["type"] for a in alerts}
    assert all(len(a["signal"]) == len(a["trace"]) > 0 for a in alerts)
    review = heartsight("clinician", "review", "--db", db, "--out", tmp_path / "review")
    assert review.returncode == 0, review.stderr
    page = next((tmp_path / "review").glob("*patch-1*.html")).read_text()
    assert page.count("<img") >= len(alerts)


def test_bad_speed_and_unreachable_brokers_are_explained(tmp_path):
    run = heartsight("stream", tmp_path / "x.npy", "--fs", 250, "--broker", "mqtt://127.0.0.1:1", "--device", "d",
                     "--speed", "fast")
    assert run.returncode == 2 and "--speed must be a positive number" in run.stderr
