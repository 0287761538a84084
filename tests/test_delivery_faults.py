"""End-to-end delivery under crashes: whatever is killed, every alert ends in the clinician's store exactly once.

The broker is Mosquitto started from `heartsight broker config`'s files (sdk.stream.broker_setup: accounts, ACLs,
persistence saved on every change) on a free port, without TLS (test_broker_setup covers it). Each test kills one part
with SIGKILL in the middle of the traffic, brings it back and waits (DEADLINE_S) until the device's outbox is empty,
which happens only once the clinic has acknowledged every alert; then the store must hold each alert once.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import ExitStack, closing
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import (DEADLINE_S, ConfiguredMosquitto, eventually, has_dynamic_security_plugin, postgres_schema,
                      sample_alert)
from sdk.clinician.listener import Listener
from sdk.clinician.store import Store
from sdk.data.synthetic import synthetic_ecg
from sdk.demo.broker import free_port, mosquitto_binary, wait_until
from sdk.stream.broker_setup import write_broker_config
from sdk.stream.mqtt import BrokerConfig
from sdk.stream.outbox import Backlog
from sdk.stream.payload import to_bytes
from sdk.stream.publisher import Publisher
from sdk.stream.topics import alerts_topic

REPO = Path(__file__).resolve().parents[1]
SITE, DEVICE = "s1", "dev-a"
BURST = 300  # alerts: at ~1,000 stored per second, long enough to kill something in the middle


pytestmark = pytest.mark.skipif(mosquitto_binary() is None or not has_dynamic_security_plugin(),
                                reason="needs mosquitto 2.0 with its dynamic security plugin")


class Broker(ConfiguredMosquitto):
    """`mosquitto -c` on the generated configuration, with one device and one clinician account."""

    def __init__(self, directory: Path):
        self.setup = write_broker_config(directory, [f"{SITE}/{DEVICE}"], ["clinic"], port=free_port(), tls=False)
        super().__init__(self.setup.conf, self.setup.port, directory / "mosquitto.log")
        passwords = json.loads(self.setup.credentials.read_text())
        self.device = BrokerConfig(self.setup.url, f"{SITE}/{DEVICE}", passwords[f"{SITE}/{DEVICE}"])
        self.clinic = BrokerConfig(self.setup.url, "clinic", passwords["clinic"])


@pytest.fixture
def broker(tmp_path):
    running = Broker(tmp_path / "broker")
    running.start()
    yield running
    running.stop()


def open_clinic_session(broker: Broker, tmp_path: Path) -> None:
    """The clinic's persistent session at the broker, as a listener that ran before leaves it: from now on the broker
    queues every alert for the clinic, whenever its listener process connects."""
    with Store(tmp_path / "first-run.sqlite") as store:
        listener = Listener(broker.clinic, store)
        listener.start(DEADLINE_S)
        listener.stop()


def heartsight_process(*args, log: Path) -> subprocess.Popen:
    """`heartsight ARGS` as a process of its own, to be killed; its output goes to log."""
    env = {k: v for k, v in os.environ.items() if k != "HEARTSIGHT_DATA"}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "sdk.cli", *map(str, args)], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def kill9(process: subprocess.Popen) -> None:
    assert process.poll() is None, "the process ended before it could be killed mid-way"
    process.send_signal(signal.SIGKILL)
    process.wait(DEADLINE_S)


def stored_ids(db: Path | str) -> list[str]:
    """The ids in a store, read as another program would, while the listener may be writing."""
    if str(db).startswith("postgresql://"):
        with psycopg.connect(str(db)) as connection:
            return [i for (i,) in connection.execute("SELECT id FROM alerts")]
    if not Path(db).exists():
        return []
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
            return [i for (i,) in connection.execute("SELECT id FROM alerts")]
    except sqlite3.OperationalError:  # the listener has not created its tables yet
        return []


def assert_exactly_once(db: Path | str, expected: list[str]) -> None:
    ids = stored_ids(db)
    lost, duplicated = set(expected) - set(ids), len(ids) - len(set(ids))
    assert not lost and not duplicated and sorted(ids) == sorted(expected), \
        f"{len(lost)} lost, {duplicated} duplicated, {len(set(ids) - set(expected))} unexpected"


def burst(publisher: Publisher) -> list[str]:
    alerts = [sample_alert(DEVICE, SITE, i=i) for i in range(BURST)]
    for alert in alerts:
        publisher.publish(alert)
    return [a["id"] for a in alerts]


# --- the broker ----------------------------------------------------------------------------------------------------

def test_broker_killed_mid_burst_with_the_listener_connected(broker, tmp_path):
    db = tmp_path / "store.sqlite"
    with Store(db) as store:
        listener = Listener(broker.clinic, store)
        listener.start(DEADLINE_S)
        publisher = Publisher(broker.device, DEVICE, SITE, tmp_path / "outbox.sqlite", reconnect_max_s=1)
        ids = burst(publisher)
        assert eventually(lambda: listener.counts["stored"] >= BURST // 10)
        broker.kill9()
        assert listener.counts["stored"] < BURST, "the burst was over before the broker was killed"
        broker.start()
        assert publisher.flush(DEADLINE_S) == Backlog(0, 0), publisher.status()
        publisher.close()
        listener.stop()
    assert_exactly_once(db, ids)


def test_broker_killed_mid_burst_while_the_listener_is_away(broker, tmp_path):
    db = tmp_path / "store.sqlite"
    with Store(db) as store:
        away = Listener(broker.clinic, store)
        away.start(DEADLINE_S)
        away.stop()  # its session stays at the broker, which queues the alerts for it (and saves them to disk)
        publisher = Publisher(broker.device, DEVICE, SITE, tmp_path / "outbox.sqlite", reconnect_max_s=1)
        ids = burst(publisher)
        assert eventually(lambda: publisher.backlog().awaiting_clinic >= BURST // 10)
        broker.kill9()
        assert publisher.backlog().awaiting_broker > 0, "the burst was over before the broker was killed"
        broker.start()
        assert eventually(lambda: publisher.backlog().awaiting_broker == 0), publisher.status()
        back = Listener(broker.clinic, store)  # the same session: what the broker kept, and what was sent again
        back.start(DEADLINE_S)
        assert publisher.flush(DEADLINE_S) == Backlog(0, 0), publisher.status()
        publisher.close()
        back.stop()
    assert_exactly_once(db, ids)


# --- the listener --------------------------------------------------------------------------------------------------

def test_listener_process_killed_mid_batch_then_restarted(broker, tmp_path):
    db = tmp_path / "store.sqlite"
    listen = ("clinician", "listen", "--broker", broker.clinic.url, "--username", "clinic",
              "--password", broker.clinic.password, "--db", db)
    open_clinic_session(broker, tmp_path)
    listener = heartsight_process(*listen, log=tmp_path / "listener.log")
    publisher = Publisher(broker.device, DEVICE, SITE, tmp_path / "outbox.sqlite")
    try:
        ids = burst(publisher)
        assert eventually(lambda: len(stored_ids(db)) >= BURST // 10), \
            (tmp_path / "listener.log").read_text()
        kill9(listener)
        assert len(stored_ids(db)) < BURST, "the burst was over before the listener was killed"
        listener = heartsight_process(*listen, log=tmp_path / "listener.log")
        assert publisher.flush(DEADLINE_S) == Backlog(0, 0), publisher.status()
    finally:
        publisher.close()
        listener.terminate()
        listener.wait(DEADLINE_S)
    assert_exactly_once(db, ids)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_listener_killed_mid_batch_loses_nothing_the_broker_redelivers_what_it_did_not_acknowledge(broker, tmp_path,
                                                                                                  kind):
    """Alerts queued at the broker for the clinic's session, published without an outbox (nothing but the broker can
    send them again): the listener is killed with SIGKILL while storing them in batches, and a new one on the same
    session stores the rest; each alert is in the store once."""
    with ExitStack() as stack:
        db = stack.enter_context(postgres_schema()) if kind == "postgresql" else tmp_path / "store.sqlite"
        listen = ("clinician", "listen", "--broker", broker.clinic.url, "--username", "clinic",
                  "--password", broker.clinic.password, "--db", db)
        Store(db).close()  # its tables, read while the listener writes
        open_clinic_session(broker, tmp_path)
        alerts = [sample_alert(DEVICE, SITE, i=i) for i in range(1500)]
        device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bare-device", protocol=mqtt.MQTTv5)
        broker.device.apply(device)
        device.connect(broker.device.host, broker.device.port)
        device.loop_start()
        infos = [device.publish(alerts_topic(SITE, DEVICE), to_bytes(alert), qos=1) for alert in alerts]
        for info in infos:
            info.wait_for_publish(DEADLINE_S)
        device.loop_stop()
        device.disconnect()
        log = tmp_path / "listener.log"
        listener = heartsight_process(*listen, log=log)
        try:
            assert wait_until(lambda: len(stored_ids(db)) > 0, DEADLINE_S), log.read_text()
            kill9(listener)
            assert len(stored_ids(db)) < len(alerts), "every alert was stored before the listener was killed"
            listener = heartsight_process(*listen, log=log)
            assert wait_until(lambda: len(stored_ids(db)) >= len(alerts), DEADLINE_S), log.read_text()
        finally:
            listener.terminate()
            listener.wait(DEADLINE_S)
        assert_exactly_once(db, [a["id"] for a in alerts])


# --- the device ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("outbox_after_crash", ["the same outbox", "a fresh outbox"])
def test_device_process_killed_mid_stream_then_the_recording_replayed(broker, tmp_path, heartsight_main,
                                                                      outbox_after_crash):
    """The replay raises the same alerts with the same ids (sdk.stream.replay.recording_stream_id): from the same
    outbox only what was not acknowledged goes out again; from a fresh one everything does, and the store keeps one."""
    ecg = synthetic_ecg(duration_s=120, fs=250, heart_rate=80, ectopic={"V": 0.2}, seed=3)  # 5 alerts, 3-95 s
    recording = tmp_path / "patch.npy"
    np.save(recording, ecg.signal)
    device = ("stream", recording, "--fs", 250, "--broker", broker.device.url, "--username", broker.device.username,
              "--password", broker.device.password, "--device", DEVICE, "--site", SITE)
    db = tmp_path / "store.sqlite"
    with Store(db) as store:
        listener = Listener(broker.clinic, store)
        listener.start(DEADLINE_S)
        streaming = heartsight_process(*device, "--outbox", tmp_path / "outbox.sqlite", "--speed", 15,
                                       log=tmp_path / "device.log")
        try:
            assert wait_until(lambda: listener.counts["stored"] >= 1 or streaming.poll() is not None, 2 * DEADLINE_S)
        finally:
            kill9(streaming)
        before_crash = stored_ids(db)
        outbox = tmp_path / ("outbox.sqlite" if outbox_after_crash == "the same outbox" else "fresh-outbox.sqlite")
        replay = heartsight_main(*device, "--outbox", outbox, "--speed", "max", "--json")
        assert replay.returncode == 0, replay.stderr
        summary = json.loads(replay.stdout)
        assert summary["awaiting_broker"] == summary["awaiting_clinic"] == 0, summary["status"]
        assert len(summary["alert_ids"]) > len(before_crash) > 0
        assert set(before_crash) <= set(summary["alert_ids"])  # the crashed run's alerts are the replay's
        listener.stop()
    assert_exactly_once(db, summary["alert_ids"])


# --- the store -----------------------------------------------------------------------------------------------------

def test_an_insert_that_fails_is_redelivered_and_stored_once_when_the_store_is_back(broker, tmp_path):
    """PostgreSQL drops the listener's connection, as a database restart does: the listener process stops without
    acknowledging the alert it could not store, and once restarted on the working database stores it, once."""
    with postgres_schema() as url:
        name = f"heartsight-fault-{os.getpid()}"
        listen = ("clinician", "listen", "--broker", broker.clinic.url, "--username", "clinic",
                  "--password", broker.clinic.password, "--db", f"{url}&application_name={name}")
        log = tmp_path / "listener.log"
        open_clinic_session(broker, tmp_path)
        listener = heartsight_process(*listen, log=log)
        publisher = Publisher(broker.device, DEVICE, SITE, tmp_path / "outbox.sqlite")
        try:
            first = [sample_alert(DEVICE, SITE, i=i) for i in range(20)]
            for alert in first:
                publisher.publish(alert)
            assert publisher.flush(DEADLINE_S) == Backlog(0, 0), log.read_text()
            with psycopg.connect(url, autocommit=True) as admin:
                [[dropped]] = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                            "WHERE application_name = %s", (name,))
            assert dropped == 1
            then = [sample_alert(DEVICE, SITE, i=i) for i in range(20, 40)]
            for alert in then:
                publisher.publish(alert)
            assert listener.wait(DEADLINE_S) == 2
            assert "could not store a batch" in log.read_text() and "stays unacknowledged" in log.read_text()
            assert publisher.backlog().total == len(then)  # none acknowledged by the clinic
            listener = heartsight_process(*listen, log=log)  # as a service manager restarts it
            assert publisher.flush(DEADLINE_S) == Backlog(0, 0), publisher.status()
        finally:
            publisher.close()
            listener.terminate()
            listener.wait(DEADLINE_S)
        assert_exactly_once(url, [a["id"] for a in first + then])
